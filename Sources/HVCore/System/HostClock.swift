import Glibc

/// The host's clocks in nanoseconds, for statistics, deadlines and guests' clock services.
public enum HostClock {
    /// CLOCK_MONOTONIC.
    public static func monotonicNanoseconds() -> UInt64 { nanoseconds(CLOCK_MONOTONIC) }

    /// CLOCK_REALTIME, since the Unix epoch (0 for a clock set before it).
    public static func wallNanoseconds() -> UInt64 { nanoseconds(CLOCK_REALTIME) }

    /// CLOCK_MONOTONIC `delay` from now, saturating at UInt64.max (a deadline that never comes)
    /// rather than wrapping to one in the past.
    public static func monotonicDeadline(after delay: Duration) -> UInt64 {
        let (deadline, overflow) = monotonicNanoseconds().addingReportingOverflow(delay.clampedNanoseconds)
        return overflow ? .max : deadline
    }

    private static func nanoseconds(_ clock: clockid_t) -> UInt64 {
        var now = timespec()
        unsafe clock_gettime(clock, &now)
        guard now.tv_sec >= 0 else { return 0 }
        return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
    }
}

extension Duration {
    /// Whole nanoseconds, clamped to 0...UInt64.max: a negative duration counts as 0, one too
    /// long for 64 bits as UInt64.max.
    public var clampedNanoseconds: UInt64 {
        guard self > .zero else { return 0 }
        let (seconds, attoseconds) = components
        let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return .max }
        let (total, carry) = whole.addingReportingOverflow(UInt64(attoseconds / 1_000_000_000))
        return carry ? .max : total
    }
}

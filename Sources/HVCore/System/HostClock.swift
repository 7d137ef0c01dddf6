import Glibc

/// The host's clocks in nanoseconds, for statistics, deadlines and guests' clock services.
public enum HostClock {
    /// CLOCK_MONOTONIC.
    public static func monotonicNanoseconds() -> UInt64 { nanoseconds(CLOCK_MONOTONIC) }

    /// CLOCK_REALTIME, since the Unix epoch (0 for a clock set before it).
    public static func wallNanoseconds() -> UInt64 { nanoseconds(CLOCK_REALTIME) }

    private static func nanoseconds(_ clock: clockid_t) -> UInt64 {
        var now = timespec()
        clock_gettime(clock, &now)
        guard now.tv_sec >= 0 else { return 0 }
        return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
    }
}

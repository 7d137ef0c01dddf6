import Glibc

/// ``HypercallNumber/clockMonotonic`` and ``HypercallNumber/clockWall``: the host's
/// CLOCK_MONOTONIC and CLOCK_REALTIME in nanoseconds, or the clocks a test injects.
public struct ClockService: ParavirtService {
    public typealias Clock = @Sendable () -> UInt64

    let monotonic: Clock
    let wall: Clock

    /// The host's clocks unless `monotonic` or `wall` replace them.
    public init(monotonic: Clock? = nil, wall: Clock? = nil) {
        self.monotonic = monotonic ?? { clockNanoseconds(CLOCK_MONOTONIC) }
        self.wall = wall ?? { clockNanoseconds(CLOCK_REALTIME) }
    }

    public func install(into table: inout HypercallTable) throws(HypercallTableError) {
        table.info.features.insert(.clock)
        let monotonic = self.monotonic
        let wall = self.wall
        try table.register(.clockMonotonic, name: "clock_monotonic") { _ throws(HypercallError) in .value(monotonic()) }
        try table.register(.clockWall, name: "clock_wall") { _ throws(HypercallError) in .value(wall()) }
    }
}

/// A clock's reading in nanoseconds (0 before the epoch, which no host clock reports).
@Sendable func clockNanoseconds(_ clock: clockid_t) -> UInt64 {
    var now = timespec()
    clock_gettime(clock, &now)
    guard now.tv_sec >= 0 else { return 0 }
    return UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
}

import HVCore

/// ``HypercallNumber/clockMonotonic`` and ``HypercallNumber/clockWall``: the host's
/// CLOCK_MONOTONIC and CLOCK_REALTIME in nanoseconds, or the clocks a test injects.
public struct ClockService: ParavirtService {
    /// A clock: nanoseconds from some fixed point.
    public typealias Clock = @Sendable () -> UInt64

    let monotonic: Clock
    let wall: Clock

    /// The host's clocks unless `monotonic` or `wall` replace them.
    public init(monotonic: Clock? = nil, wall: Clock? = nil) {
        self.monotonic = monotonic ?? { HostClock.monotonicNanoseconds() }
        self.wall = wall ?? { HostClock.wallNanoseconds() }
    }

    /// Adds clock_monotonic and clock_wall.
    public func install(into table: inout HypercallTable) throws(HypercallTableError) {
        table.info.features.insert(.clock)
        let monotonic = self.monotonic
        let wall = self.wall
        try table.register(.clockMonotonic, name: "clock_monotonic") { _ throws(HypercallError) in .value(monotonic()) }
        try table.register(.clockWall, name: "clock_wall") { _ throws(HypercallError) in .value(wall()) }
    }
}

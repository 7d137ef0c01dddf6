import HVCore

/// A boot-time probe, as Firecracker's boot timer: the guest writes the magic byte 123 at
/// offset 0 once it has booted (its init does, from user space), and the device reports the
/// time since `start` to `onBoot`.
///
/// Register it on the MMIO bus (a page, so a guest can reach it with `devmem` through
/// /dev/mem) or on the PIO bus (a port). Any access width works; other values, other offsets
/// and reads are ignored (reads return 0). Each magic write reports again.
public final class BootTimer: BusDevice {
    /// The byte a guest writes to say it booted.
    public static let magic: UInt8 = 123
    /// The MMIO window a guest maps: one page.
    public static let windowSize: UInt64 = 0x1000

    private let start: UInt64
    private let onBoot: @Sendable (Duration) -> Void

    /// - Parameters:
    ///   - start: the CLOCK_MONOTONIC nanoseconds to measure from (`HostClock`); the
    ///     default is now.
    ///   - onBoot: called on the vCPU thread that wrote the magic, with the time since start.
    public init(start: UInt64 = HostClock.monotonicNanoseconds(), onBoot: @escaping @Sendable (Duration) -> Void) {
        self.start = start
        self.onBoot = onBoot
    }

    /// Reads as zero.
    public func read(offset: UInt64, width: AccessWidth) -> UInt64 { 0 }

    /// A write of ``magic`` reports the time since start, once.
    public func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        guard offset == 0, UInt8(truncatingIfNeeded: value) == Self.magic else { return }
        let now = HostClock.monotonicNanoseconds()
        // A start in the future (a caller's mistake) reports zero rather than trapping.
        onBoot(.nanoseconds(Int64(clamping: now >= start ? now - start : 0)))
    }
}

/// The boot timer keeps nothing a guest could notice: a restored machine's timer measures from
/// its own start.
extension BootTimer: SnapshotStateful {
    /// The version of the state ``saveState(to:)`` writes.
    public var snapshotVersion: UInt16 { 1 }

    /// Writes the state a restore needs.
    public func saveState(to encoder: inout SnapshotEncoder) {}

    /// Takes on a saved state, refusing values that cannot be right.
    public func restoreState(from decoder: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        try decoder.expectEnd()
    }
}

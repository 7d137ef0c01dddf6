import HVCore
import Logging
import Synchronization

/// The interrupt side of a virtio transport: the InterruptStatus bits, the line that raises
/// them, the configuration generation, and DEVICE_NEEDS_RESET.
///
/// Lock-free so that a device may use it from any thread, including while the transport is
/// calling the device.
public final class VirtioInterrupt: Sendable {
    /// InterruptStatus bits (virtio-mmio).
    public struct Status: OptionSet, Sendable {
        /// The InterruptStatus bits.
        public let rawValue: UInt32
        /// A status from its bits.
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// The device used buffers in at least one queue.
        public static let usedBuffer = Status(rawValue: 1)
        /// The configuration space (or the device status) changed.
        public static let configurationChange = Status(rawValue: 2)
    }

    private let line: any InterruptLine
    private let pending = Atomic<UInt32>(0)
    private let generation = Atomic<UInt32>(0)
    private let needsResetFlag = Atomic<Bool>(false)
    private let failedTriggers = Atomic<UInt64>(0)
    private let logger: Logger

    /// An interrupt raised on `line`.
    public init(line: any InterruptLine, logger: Logger = Logger(label: "hvkit.virtio")) {
        self.line = line
        self.logger = logger
    }

    /// Pending InterruptStatus bits.
    public var status: Status { Status(rawValue: pending.load(ordering: .acquiring)) }
    /// The ConfigGeneration register: changes whenever the configuration space does.
    public var configurationGeneration: UInt32 { generation.load(ordering: .acquiring) }
    /// Whether the device has asked to be reset.
    public var needsReset: Bool { needsResetFlag.load(ordering: .acquiring) }
    /// How many times raising the line failed (each is logged).
    public var failedTriggerCount: UInt64 { failedTriggers.load(ordering: .relaxed) }

    /// Tells the driver that buffers were used.
    public func signalUsedBuffers() {
        raise(.usedBuffer)
    }

    /// Tells the driver that the configuration space changed.
    public func signalConfigurationChange() {
        generation.add(1, ordering: .acquiringAndReleasing)
        raise(.configurationChange)
    }

    /// Sets DEVICE_NEEDS_RESET and tells the driver (virtio 1.2, 2.1.2): the device met an
    /// error it cannot go on from, such as a malformed ring.
    public func setNeedsReset(because reason: String) {
        guard !needsResetFlag.exchange(true, ordering: .acquiringAndReleasing) else { return }
        logger.warning("virtio device needs a reset", metadata: ["reason": "\(reason)"])
        signalConfigurationChange()
    }

    /// Takes on saved interrupt state (a restore): pending status bits, the configuration
    /// generation and DEVICE_NEEDS_RESET. The line itself is not raised again: the interrupt
    /// controllers' restored state already says whether the guest has an interrupt pending.
    func restore(status: Status, generation: UInt32, needsReset: Bool) {
        pending.store(status.rawValue, ordering: .releasing)
        self.generation.store(generation, ordering: .releasing)
        needsResetFlag.store(needsReset, ordering: .releasing)
    }

    /// The driver acknowledged `bits` (InterruptACK).
    func acknowledge(_ bits: UInt32) {
        pending.bitwiseAnd(~bits, ordering: .acquiringAndReleasing)
    }

    /// Clears everything for a device reset.
    func reset() {
        pending.store(0, ordering: .releasing)
        needsResetFlag.store(false, ordering: .releasing)
    }

    private func raise(_ bit: Status) {
        pending.bitwiseOr(bit.rawValue, ordering: .acquiringAndReleasing)
        do {
            try line.trigger()
        } catch {
            failedTriggers.add(1, ordering: .relaxed)
            logger.error("raising a virtio interrupt failed", metadata: ["errno": "\(error)"])
        }
    }
}

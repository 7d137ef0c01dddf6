import HVCore
import Logging
import Synchronization
import SystemPackage

/// The virtio-mmio transport (version 2) for one ``VirtioDevice``: register it on an MMIO
/// `Bus` at a base address with ``windowSize`` bytes, and announce it to the guest (for Linux,
/// `virtio_mmio.device=4K@0xBASE:IRQ` on the command line).
///
/// It implements the whole register set, feature negotiation, the device status state machine
/// and queue setup. Every guest access is checked: registers are 32 bits wide and aligned,
/// configuration accesses are 1, 2 or 4 bytes, aligned and inside the configuration space,
/// queue registers can be written only between FEATURES_OK and DRIVER_OK while the queue is
/// not ready, and illegal status transitions are ignored. Refused accesses are counted in
/// ``refusedAccessCount`` and change nothing.
public final class VirtioMMIOTransport: BusDevice {
    /// The bytes a virtio-mmio device occupies on the bus (registers plus configuration).
    public static let windowSize: UInt64 = 0x1000

    /// The device behind the transport.
    public let device: any VirtioDevice
    /// Interrupt status, configuration generation and DEVICE_NEEDS_RESET.
    public let interrupt: VirtioInterrupt
    /// The VendorID register.
    public let vendorID: UInt32

    let memory: any GuestMemory
    /// The features offered to the driver: the device's, with VERSION_1 and without those the
    /// transport does not implement (ACCESS_PLATFORM, RING_PACKED).
    public let offeredFeatures: VirtioFeatures
    let state: Locked<MMIOTransportState>
    let queueHistory = Locked(QueueHistory())
    /// The transport's and its queues' log of guest-caused events: rate-limited lines, exact
    /// counts by kind (malformed chains, refused register accesses).
    public let guestEvents: GuestEventLog
    /// Serialises activation and reset, which call into the device outside `state`'s lock.
    let lifecycle = Locked(())
    let active = Atomic<Bool>(false)
    private let refusedAccesses = Atomic<UInt64>(0)
    private let notifications = Atomic<UInt64>(0)
    /// How queues whose notification used up its budget come back for the rest.
    let resumer = QueueResumer()
    let logger: Logger

    /// - Parameters:
    ///   - device: the device model.
    ///   - memory: the guest memory its queues live in.
    ///   - interruptLine: the line the device raises (an irqfd under KVM).
    ///   - vendorID: what the VendorID register reads.
    ///   - logger: where the transport logs refused accesses.
    public init(
        device: any VirtioDevice, memory: any GuestMemory, interruptLine: any InterruptLine,
        vendorID: UInt32 = 0, logger: Logger = Logger(label: "hvkit.virtio-mmio")
    ) {
        self.device = device
        self.memory = memory
        self.vendorID = vendorID
        self.logger = logger
        guestEvents = GuestEventLog(logger: logger)
        offeredFeatures = device.offeredFeatures.union(.version1).subtracting([.accessPlatform, .ringPacked])
        interrupt = VirtioInterrupt(line: interruptLine, logger: logger)
        state = Locked(MMIOTransportState(queueMaxSizes: device.queueMaxSizes))
    }

    // MARK: Observing

    /// What the device's queues have done over the transport's life, across driver resets:
    /// read from counters the queues keep anyway, so asking costs the data path nothing.
    public var queueCounts: VirtioQueueCounts {
        queueHistory.withLock { $0.total }
    }

    /// The device status as the driver reads it.
    public var status: DeviceStatus {
        let status = state.withLock { $0.status }
        return interrupt.needsReset ? status.union(.needsReset) : status
    }

    /// The features the driver accepted (meaningful once FEATURES_OK is set).
    public var negotiatedFeatures: VirtioFeatures { state.withLock { $0.driverFeatures } }
    /// Whether the device is active (DRIVER_OK accepted and not reset since).
    public var isActive: Bool { active.load(ordering: .acquiring) }
    /// Guest accesses refused as illegal (wrong width or alignment, wrong time, out of range).
    public var refusedAccessCount: UInt64 { refusedAccesses.load(ordering: .relaxed) }
    /// Queue notifications delivered to the device (MMIO writes and ioeventfds).
    public var notificationCount: UInt64 { notifications.load(ordering: .relaxed) }

    // MARK: BusDevice

    /// A driver's read of a register or of the configuration space; refused accesses read 0 and are counted.
    public func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        if offset >= MMIORegister.configurationOffset {
            return readConfiguration(at: offset - MMIORegister.configurationOffset, width: width)
        }
        guard width == .doubleWord, offset % 4 == 0, let register = MMIORegister(rawValue: offset) else {
            return refuse("read of \(width.byteCount) bytes at register offset 0x\(String(offset, radix: 16))", value: 0)
        }
        return UInt64(readRegister(register))
    }

    /// A driver's write of a register or of the configuration space; illegal ones are refused and counted.
    public func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        if offset >= MMIORegister.configurationOffset {
            writeConfiguration(at: offset - MMIORegister.configurationOffset, width: width, value: value)
            return
        }
        guard width == .doubleWord, offset % 4 == 0, let register = MMIORegister(rawValue: offset) else {
            refuse("write of \(width.byteCount) bytes at register offset 0x\(String(offset, radix: 16))")
            return
        }
        writeRegister(register, UInt32(truncatingIfNeeded: value))
    }

    // MARK: ioeventfd notification

    /// A queue's notification eventfd, for the VMM to register with the hypervisor as an
    /// ioeventfd on the QueueNotify register (base + ``MMIORegister/queueNotify``, 4 bytes,
    /// matching ``queueIndex``).
    public struct QueueNotifier: Sendable {
        /// The queue it kicks.
        public let queueIndex: Int
        /// The eventfd the hypervisor signals.
        public let eventFD: EventFD
        /// Its registration on the event loop.
        public let registration: EventLoop.Registration
        /// The register offset the ioeventfd must cover.
        public var registerOffset: UInt64 { MMIORegister.queueNotify.rawValue }
        /// The value the ioeventfd must match.
        public var dataMatch: UInt64 { UInt64(queueIndex) }
    }

    /// Creates one eventfd per queue and serves it on `loop`, so that a guest kick reaches the
    /// device on the loop's thread without an exit to the VMM. Register the results with the
    /// hypervisor (HVKVM: `VirtualMachine.registerIOEventFD`); unregister them with
    /// ``detachNotifiers(_:from:)``.
    ///
    /// The transport also uses them to resume a queue whose notification used up its budget
    /// (see ``LockedVirtqueue``), so that the rest of the work runs on `loop` in turn with
    /// everything else there, and a notification by MMIO exit returns to the vCPU after one
    /// budget. Attach them even when the hypervisor does not deliver kicks through them. Without
    /// them, the notified thread serves the rest itself, one budget at a time with the queue's
    /// lock released in between.
    public func attachNotifiers(on loop: EventLoop) throws(Errno) -> [QueueNotifier] {
        var notifiers: [QueueNotifier] = []
        do throws(Errno) {
            for index in device.queueMaxSizes.indices {
                let eventFD = try EventFD(nonBlocking: true)
                let registration = try loop.register(eventFD.fileDescriptor) { [self, eventFD] in
                    // Drain first: kicks that arrive while the device works re-arm the eventfd.
                    guard let _ = try? eventFD.consume() else { return }
                    notifyDevice(queue: index)
                }
                notifiers.append(QueueNotifier(queueIndex: index, eventFD: eventFD, registration: registration))
            }
        } catch {
            detachNotifiers(notifiers, from: loop)
            throw error
        }
        resumer.attach(notifiers)
        return notifiers
    }

    /// Stops serving notifiers made by ``attachNotifiers(on:)``.
    public func detachNotifiers(_ notifiers: [QueueNotifier], from loop: EventLoop) {
        resumer.detach(notifiers)
        for notifier in notifiers { loop.unregister(notifier.registration) }
    }

    // MARK: Registers

    private func readRegister(_ register: MMIORegister) -> UInt32 {
        switch register {
        case .magicValue: return MMIORegister.magic
        case .version: return MMIORegister.transportVersion
        case .deviceID: return device.deviceType.rawValue
        case .vendorID: return vendorID
        case .deviceFeatures: return state.withLock { offeredFeatures.word($0.deviceFeaturesSelect) }
        case .queueSizeMax:
            return state.withLock { state in state.selectedQueueIndex.map { UInt32(state.queues[$0].maxSize) } ?? 0 }
        case .queueReady:
            return state.withLock { state in state.selectedQueueIndex.map { state.queues[$0].isReady ? 1 : 0 } ?? 0 }
        case .interruptStatus: return interrupt.status.rawValue
        case .status: return UInt32(status.rawValue)
        case .configGeneration: return interrupt.configurationGeneration
        // No shared memory regions: a length of all ones says "no such region".
        case .sharedMemoryLengthLow, .sharedMemoryLengthHigh, .sharedMemoryBaseLow, .sharedMemoryBaseHigh:
            return .max
        default:
            // Write-only registers read as zero.
            return 0
        }
    }

    private func writeRegister(_ register: MMIORegister, _ value: UInt32) {
        switch register {
        case .status:
            writeStatus(value)
        case .queueNotify:
            notifyDevice(queue: Int(value & 0xFFFF))
        case .interruptAcknowledge:
            interrupt.acknowledge(value)
        default:
            let refusal: String? = state.withLock { state in writeSetupRegister(register, value, &state) }
            if let refusal { refuse(refusal) }
        }
    }

    /// Writes a negotiation or queue-setup register; returns why it was refused, if it was.
    private func writeSetupRegister(_ register: MMIORegister, _ value: UInt32, _ state: inout MMIOTransportState) -> String? {
        switch register {
        case .deviceFeaturesSelect: state.deviceFeaturesSelect = value
        case .driverFeaturesSelect: state.driverFeaturesSelect = value
        case .queueSelect: state.queueSelect = value
        case .sharedMemorySelect: break
        case .driverFeatures:
            guard state.status.contains(.driver), !state.status.contains(.featuresOK) else {
                return "DriverFeatures written in status \(state.status)"
            }
            state.driverFeatures = state.driverFeatures.replacingWord(state.driverFeaturesSelect, with: value)
        case .queueSize, .queueReady, .queueDescriptorLow, .queueDescriptorHigh,
             .queueDriverLow, .queueDriverHigh, .queueDeviceLow, .queueDeviceHigh:
            return writeQueueRegister(register, value, &state)
        default:
            return "write to read-only register \(register)"
        }
        return nil
    }

    private func writeQueueRegister(_ register: MMIORegister, _ value: UInt32, _ state: inout MMIOTransportState) -> String? {
        guard let index = state.selectedQueueIndex else {
            return "\(register) written for queue \(state.queueSelect), which does not exist"
        }
        if register == .queueReady, value == 0, !state.status.contains(.driverOK) {
            // Taking a queue back before DRIVER_OK (Linux does when probing fails).
            state.queues[index].reset()
            return nil
        }
        guard state.selectedQueueIsConfigurable else {
            return "\(register) written for queue \(index) in status \(state.status) (ready: \(state.queues[index].isReady))"
        }
        switch register {
        case .queueSize:
            guard value <= UInt32(UInt16.max) else { return "QueueNum \(value) is larger than any queue" }
            state.queues[index].size = UInt16(value)
        case .queueReady:
            guard value == 1 else { return "QueueReady written with \(value)" }
            do throws(QueueFault) {
                try state.queues[index].makeReady(in: memory)
            } catch {
                return "queue \(index) not made ready: \(error)"
            }
        case .queueDescriptorLow: state.queues[index].descriptorTable = Self.replacingLow(state.queues[index].descriptorTable, value)
        case .queueDescriptorHigh: state.queues[index].descriptorTable = Self.replacingHigh(state.queues[index].descriptorTable, value)
        case .queueDriverLow: state.queues[index].availableRing = Self.replacingLow(state.queues[index].availableRing, value)
        case .queueDriverHigh: state.queues[index].availableRing = Self.replacingHigh(state.queues[index].availableRing, value)
        case .queueDeviceLow: state.queues[index].usedRing = Self.replacingLow(state.queues[index].usedRing, value)
        case .queueDeviceHigh: state.queues[index].usedRing = Self.replacingHigh(state.queues[index].usedRing, value)
        default: return "\(register) is not a queue register"
        }
        return nil
    }

    private static func replacingLow(_ address: GuestAddress, _ value: UInt32) -> GuestAddress {
        GuestAddress((address.rawValue & 0xFFFF_FFFF_0000_0000) | UInt64(value))
    }

    private static func replacingHigh(_ address: GuestAddress, _ value: UInt32) -> GuestAddress {
        GuestAddress((address.rawValue & 0x0000_0000_FFFF_FFFF) | (UInt64(value) << 32))
    }

    // MARK: Status

    private enum StatusEffect {
        case none
        case reset
        case activate(VirtioActivation)
    }

    private func writeStatus(_ value: UInt32) {
        lifecycle.withLock { _ in
            let effect: StatusEffect
            let refusal: String?
            (effect, refusal) = state.withLock { state in applyStatus(value, &state) }
            if let refusal { refuse(refusal) }
            switch effect {
            case .none:
                break
            case .reset:
                // The device stops first, so nothing touches the queues after the registers reset.
                active.store(false, ordering: .releasing)
                device.reset()
                queueHistory.withLock { $0.retire() }
                state.withLock { $0.reset() }
                interrupt.reset()
            case let .activate(activation):
                do throws(VirtioDeviceError) { try start(activation) } catch {
                    interrupt.setNeedsReset(because: "activation failed: \(error)")
                }
            }
        }
    }

    /// Starts the device on `activation`'s queues and marks the transport active; called with
    /// `lifecycle` held (when the driver sets DRIVER_OK, or by a restore).
    func start(_ activation: VirtioActivation) throws(VirtioDeviceError) {
        try device.activate(activation)
        queueHistory.withLock { $0.active = activation.queues.compactMap { $0 } }
        active.store(true, ordering: .releasing)
    }

    private func applyStatus(_ value: UInt32, _ state: inout MMIOTransportState) -> (StatusEffect, String?) {
        if value == 0 { return (.reset, nil) }
        guard value <= UInt32(UInt8.max) else { return (.none, "status \(value) has bits above 8") }
        let requested = DeviceStatus(rawValue: UInt8(value))
        guard state.status.allowsDriverTransition(to: requested) else {
            return (.none, "illegal status transition \(state.status) -> \(requested)")
        }
        var accepted = requested.subtracting(.needsReset)
        let added = accepted.subtracting(state.status)
        var refusal: String?
        if added.contains(.featuresOK) {
            let features = state.driverFeatures
            if !features.isSubset(of: offeredFeatures) || !features.contains(.version1) {
                // Leaving FEATURES_OK clear is how the device says no (virtio 1.2, 3.1.1).
                accepted.remove(.featuresOK)
                refusal = "driver features \(features) are not a subset of \(offeredFeatures) with VERSION_1"
            }
        }
        state.status = accepted
        guard added.contains(.driverOK), accepted.contains(.driverOK) else { return (.none, refusal) }
        return (.activate(activation(queues: state.queues, features: state.driverFeatures)), refusal)
    }

    /// What the device gets when it starts: every ready queue under its own lock, with the
    /// ring features the driver accepted.
    func activation(queues: [SplitQueue], features: VirtioFeatures) -> VirtioActivation {
        let locked: [LockedVirtqueue?] = queues.enumerated().map { index, queue in
            guard queue.isReady else { return nil }
            var configured = queue
            configured.eventIndexEnabled = features.contains(.eventIndex)
            configured.indirectEnabled = features.contains(.indirectDescriptors)
            return LockedVirtqueue(index: index, queue: configured, memory: memory, interrupt: interrupt, logger: logger,
                                   events: guestEvents, resume: { [resumer] in resumer.requestResume(queue: index) })
        }
        return VirtioActivation(memory: memory, features: features, queues: locked, interrupt: interrupt)
    }

    // MARK: Notification

    func notifyDevice(queue index: Int) {
        guard active.load(ordering: .acquiring), device.queueMaxSizes.indices.contains(index) else {
            refuse("notification for queue \(index) while the device is not active or has no such queue")
            return
        }
        notifications.add(1, ordering: .relaxed)
        device.queueNotified(index)
        // No notifier to come back on: serve the rest here, one budget at a time, with every
        // lock released in between.
        while resumer.takeRequest(queue: index), active.load(ordering: .acquiring) {
            device.queueNotified(index)
        }
    }

    // MARK: Configuration space

    private func configurationAccessIsValid(at offset: UInt64, width: AccessWidth, size: Int) -> Bool {
        width != .quadWord && offset % UInt64(width.byteCount) == 0
            && offset < UInt64(size) && UInt64(size) - offset >= UInt64(width.byteCount)
    }

    private func readConfiguration(at offset: UInt64, width: AccessWidth) -> UInt64 {
        let configuration = device.configuration
        guard configurationAccessIsValid(at: offset, width: width, size: configuration.count) else {
            return refuse("configuration read of \(width.byteCount) bytes at 0x\(String(offset, radix: 16)) (size \(configuration.count))", value: 0)
        }
        var value: UInt64 = 0
        for byte in 0..<width.byteCount {
            value |= UInt64(configuration[Int(offset) + byte]) << (8 * UInt64(byte))
        }
        return value
    }

    private func writeConfiguration(at offset: UInt64, width: AccessWidth, value: UInt64) {
        let size = device.configuration.count
        guard configurationAccessIsValid(at: offset, width: width, size: size) else {
            refuse("configuration write of \(width.byteCount) bytes at 0x\(String(offset, radix: 16)) (size \(size))")
            return
        }
        let bytes = (0..<width.byteCount).map { UInt8(truncatingIfNeeded: value >> (8 * UInt64($0))) }
        device.writeConfiguration(at: Int(offset), bytes: bytes)
    }

    // MARK: Refusals

    @discardableResult
    private func refuse(_ what: String, value: UInt64 = 0) -> UInt64 {
        refusedAccesses.add(1, ordering: .relaxed)
        guestEvents.record("refused-access", level: .debug, "refused virtio-mmio access",
                           metadata: ["device": "\(device.deviceType)", "access": "\(what)"])
        return value
    }
}

/// Brings queues back for work left when a notification used up its budget: through the
/// queue's notifier eventfd (so the event loop serves it in turn with everything else), or,
/// with no notifier attached, by a request the notifying thread picks up. Apart from the
/// transport so that queues can hold it without holding the transport.
final class QueueResumer: Sendable {
    private let signals = Locked<[Int: EventFD]>([:])
    private let requested = Locked<Set<Int>>([])

    func attach(_ notifiers: [VirtioMMIOTransport.QueueNotifier]) {
        signals.withLock { signals in
            for notifier in notifiers { signals[notifier.queueIndex] = notifier.eventFD }
        }
    }

    func detach(_ notifiers: [VirtioMMIOTransport.QueueNotifier]) {
        signals.withLock { signals in
            for notifier in notifiers where signals[notifier.queueIndex] === notifier.eventFD {
                signals[notifier.queueIndex] = nil
            }
        }
    }

    func requestResume(queue index: Int) {
        if let signal = signals.withLock({ $0[index] }), (try? signal.signal()) != nil { return }
        requested.withLock { _ = $0.insert(index) }
    }

    /// Whether a resumption of queue `index` was requested for the notifying thread (and
    /// forgets the request).
    func takeRequest(queue index: Int) -> Bool {
        requested.withLock { $0.remove(index) != nil }
    }
}

/// Counts of what a device's queues did, summed over its activations.
public struct VirtioQueueCounts: Sendable, Hashable {
    /// Chains returned to the driver (rejected ones included).
    public var completedChains: UInt64 = 0
    /// Chains refused as malformed (loops, buffers outside RAM, bad indirect tables, ...).
    public var rejectedChains: UInt64 = 0
    /// Queues that broke (the driver misbehaved and the device asked for a reset).
    public var brokenQueues: UInt64 = 0
    /// Times the driver set DRIVER_OK and the device started.
    public var activations: UInt64 = 0

    /// No counts yet.
    public init() {}
}

/// The queues of the current activation, and what earlier ones did.
struct QueueHistory {
    var active: [LockedVirtqueue] = [] {
        didSet { if !active.isEmpty { retired.activations += 1 } }
    }
    var retired = VirtioQueueCounts()

    /// Folds the current queues into the retired counts (the driver reset the device).
    mutating func retire() {
        retired = total
        active = []
    }

    var total: VirtioQueueCounts {
        var counts = retired
        for queue in active {
            counts.completedChains += queue.completedChainCount
            counts.rejectedChains += queue.rejectedChainCount
            if queue.fault != nil { counts.brokenQueues += 1 }
        }
        return counts
    }
}

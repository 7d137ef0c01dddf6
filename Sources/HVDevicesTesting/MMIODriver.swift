import HVCore
import HVDevices

/// Drives a ``VirtioMMIOTransport`` through its registers the way Linux's virtio_mmio driver does.
public struct MMIODriver {
    /// The transport driven, as a guest would through its registers.
    public let transport: VirtioMMIOTransport

    /// A driver for `transport`.
    public init(transport: VirtioMMIOTransport) { self.transport = transport }

    /// Reads a 32-bit register.
    public func read(_ register: MMIORegister) -> UInt32 {
        UInt32(truncatingIfNeeded: transport.read(offset: register.rawValue, width: .doubleWord))
    }

    /// Writes a 32-bit register.
    public func write(_ register: MMIORegister, _ value: UInt32) {
        transport.write(offset: register.rawValue, width: .doubleWord, value: UInt64(value))
    }

    /// The device status register.
    public var status: DeviceStatus { DeviceStatus(rawValue: UInt8(truncatingIfNeeded: read(.status))) }

    /// Writes the device status register.
    public func setStatus(_ status: DeviceStatus) { write(.status, UInt32(status.rawValue)) }

    /// The features the device offers, both pages.
    public var offeredFeatures: VirtioFeatures {
        write(.deviceFeaturesSelect, 0)
        let low = read(.deviceFeatures)
        write(.deviceFeaturesSelect, 1)
        let high = read(.deviceFeatures)
        return VirtioFeatures(rawValue: UInt64(high) << 32 | UInt64(low))
    }

    /// Reset, ACKNOWLEDGE, DRIVER, features (all offered unless `features` says otherwise),
    /// FEATURES_OK. Returns whether the device kept FEATURES_OK.
    @discardableResult
    public func negotiate(features: VirtioFeatures? = nil) -> Bool {
        setStatus([])
        setStatus(.acknowledge)
        setStatus([.acknowledge, .driver])
        let accepted = features ?? offeredFeatures
        write(.driverFeaturesSelect, 0)
        write(.driverFeatures, accepted.word(0))
        write(.driverFeaturesSelect, 1)
        write(.driverFeatures, accepted.word(1))
        setStatus([.acknowledge, .driver, .featuresOK])
        return status.contains(.featuresOK)
    }

    /// Programs queue `index` with the driver queue's layout and makes it ready.
    public func setUpQueue(_ index: UInt32, _ queue: DriverQueue) {
        write(.queueSelect, index)
        write(.queueSize, UInt32(queue.size))
        writeAddress(.queueDescriptorLow, queue.descriptorTable)
        writeAddress(.queueDriverLow, queue.availableRing)
        writeAddress(.queueDeviceLow, queue.usedRing)
        write(.queueReady, 1)
    }

    /// Writes a 64-bit guest address to a low register and the high one after it.
    public func writeAddress(_ low: MMIORegister, _ address: GuestAddress) {
        write(low, UInt32(truncatingIfNeeded: address.rawValue))
        if let high = MMIORegister(rawValue: low.rawValue + 4) {
            write(high, UInt32(truncatingIfNeeded: address.rawValue >> 32))
        }
    }

    /// Sets DRIVER_OK.
    public func driverOK() {
        setStatus([.acknowledge, .driver, .featuresOK, .driverOK])
    }

    /// The whole initialisation: negotiate, set up `queues` in order, DRIVER_OK.
    public func initialize(queues: [DriverQueue], features: VirtioFeatures? = nil) {
        negotiate(features: features)
        for (index, queue) in queues.enumerated() { setUpQueue(UInt32(index), queue) }
        driverOK()
    }

    /// Kicks `queue` (QueueNotify).
    public func notify(_ queue: UInt32) { write(.queueNotify, queue) }

    /// Reads and acknowledges the interrupt status.
    public func acknowledgeInterrupts() -> VirtioInterrupt.Status {
        let pending = read(.interruptStatus)
        write(.interruptAcknowledge, pending)
        return VirtioInterrupt.Status(rawValue: pending)
    }
}

import HVCore
@testable import HVDevices
import HVDevicesTesting
import HVTestSupport
import Testing

/// Transports saved and restored with the driver-side kit: the driver goes on with the same
/// rings, through a new device and transport, as a restored guest does.
@Suite("virtio-mmio transport snapshots")
struct VirtioMMIOTransportSnapshotTests {
    static func save(_ transport: VirtioMMIOTransport) throws -> [UInt8] {
        try transport.prepareSnapshot()
        var encoder = SnapshotEncoder()
        transport.saveState(to: &encoder)
        return encoder.bytes
    }

    static func restore(_ transport: VirtioMMIOTransport, _ bytes: [UInt8]) throws(SnapshotError) {
        var decoder = SnapshotDecoder(bytes, context: "transport")
        try transport.restoreState(from: &decoder, version: transport.snapshotVersion)
    }

    /// A console holding two receive buffers and with input waiting: the buffers go back to
    /// the ring for the save, the restored device takes them again and fills them, the used
    /// ring goes on at the saved position, and output still flows.
    @Test func aConsoleHoldingBuffersGoesOnAfterRestore() throws {
        let memory = try testMemory()
        let sink = CollectingSink()
        let original = VirtioMMIOTransport(device: ConsoleDevice(output: sink, queueSize: 16), memory: memory, interruptLine: CountingInterruptLine())
        let driver = MMIODriver(transport: original)
        var receive = try DriverQueue(memory: memory, size: 16, base: GuestAddress(0x1000))
        var transmit = try DriverQueue(memory: memory, size: 16, base: GuestAddress(0x3000))
        driver.initialize(queues: [receive, transmit])
        // One buffer used before the snapshot, two held.
        (original.device as? ConsoleDevice)?.receive(Array("x".utf8))
        for base in [0xA000, 0xB000, 0xC000] { try receive.addChain([(GuestAddress(UInt64(base)), 8, true)]) }
        driver.notify(0)
        #expect(try receive.takeUsed().map(\.length) == [1])

        let bytes = try Self.save(original)
        #expect(original.queueCounts.completedChains == 1)
        // The original takes its buffers back and goes on too.
        original.snapshotFinished()
        (original.device as? ConsoleDevice)?.receive(Array("o".utf8))
        #expect(try receive.takeUsed().map(\.length) == [1])

        // The restored pair, on the same rings as the guest left them at the save.
        try memory.write(UInt16(1), at: GuestAddress(receive.usedRing.rawValue + 2))
        let restoredSink = CollectingSink()
        let console = ConsoleDevice(output: restoredSink, queueSize: 16)
        let restored = VirtioMMIOTransport(device: console, memory: memory, interruptLine: CountingInterruptLine())
        try Self.restore(restored, bytes)
        #expect(restored.isActive && restored.status.contains(.driverOK))
        #expect(restored.negotiatedFeatures == original.negotiatedFeatures)
        console.receive(Array("hi".utf8))
        #expect(try receive.usedIndex == 2, "the used ring did not go on from its saved position")
        #expect(try memory.readBytes(at: GuestAddress(0xB000), count: 2) == Array("hi".utf8))
        try memory.write(Array("out".utf8), to: GuestAddress(0x8000))
        try transmit.addChain([(GuestAddress(0x8000), 3, false)])
        MMIODriver(transport: restored).notify(1)
        #expect(restoredSink.text == "out")
    }

    /// A driver between FEATURES_OK and DRIVER_OK: the restored transport is mid-negotiation
    /// too, and the driver finishes it there.
    @Test func aTransportMidNegotiationFinishesAfterRestore() throws {
        let memory = try testMemory()
        let original = VirtioMMIOTransport(device: EntropyDevice(queueSize: 8), memory: memory, interruptLine: CountingInterruptLine())
        let driver = MMIODriver(transport: original)
        var queue = try DriverQueue(memory: memory, size: 8)
        #expect(driver.negotiate())
        driver.setUpQueue(0, queue)
        let bytes = try Self.save(original)

        let restored = VirtioMMIOTransport(device: EntropyDevice(queueSize: 8), memory: memory, interruptLine: CountingInterruptLine())
        try Self.restore(restored, bytes)
        #expect(!restored.isActive && restored.status.contains(.featuresOK))
        let restoredDriver = MMIODriver(transport: restored)
        restoredDriver.driverOK()
        try queue.addChain([(GuestAddress(0x8000), 64, true)])
        restoredDriver.notify(0)
        #expect(try queue.takeUsed().map(\.length) == [64])
    }

    /// What a restore refuses: every cut of the state, a queue larger than the device's, rings
    /// outside guest RAM, features the device does not offer, a device running without
    /// DRIVER_OK, and a device that does not save its state.
    @Test func impossibleTransportStatesAreRefused() throws {
        let memory = try testMemory()
        let original = VirtioMMIOTransport(device: EntropyDevice(queueSize: 8), memory: memory, interruptLine: CountingInterruptLine())
        let queue = try DriverQueue(memory: memory, size: 8)
        MMIODriver(transport: original).initialize(queues: [queue])
        let bytes = try Self.save(original)
        let fresh = { VirtioMMIOTransport(device: EntropyDevice(queueSize: 8), memory: memory, interruptLine: CountingInterruptLine()) }
        for length in 0..<bytes.count {
            #expect(throws: SnapshotError.self, "\(length) bytes accepted") { try Self.restore(fresh(), Array(bytes.prefix(length))) }
        }
        // Layout: status u8, two selects u32, features u64, queue select u32, active flag,
        // queue count u64, then the queue: size u16, descriptor table u64, ...
        let queueStart = 1 + 4 + 4 + 8 + 4 + 1 + 8
        var tooLarge = bytes
        tooLarge[queueStart] = 0
        tooLarge[queueStart + 1] = 0x10  // 4096 entries
        #expect(throws: SnapshotError.self) { try Self.restore(fresh(), tooLarge) }
        var outside = bytes
        for index in 0..<8 { outside[queueStart + 2 + index] = index == 2 ? 0x10 : 0 }  // descriptor table at 1 MiB: the hole
        #expect(throws: SnapshotError.self) { try Self.restore(fresh(), outside) }
        var unoffered = bytes
        unoffered[1 + 4 + 4 + 7] |= 0x80  // feature bit 63
        #expect(throws: SnapshotError.self) { try Self.restore(fresh(), unoffered) }
        var notStarted = bytes
        notStarted[0] &= ~DeviceStatus.driverOK.rawValue
        #expect(throws: SnapshotError.self) { try Self.restore(fresh(), notStarted) }

        let vsockLike = VirtioMMIOTransport(device: StatelessDevice(), memory: memory, interruptLine: CountingInterruptLine())
        #expect(throws: SnapshotError.self) { try vsockLike.prepareSnapshot() }
        #expect(throws: SnapshotError.self) { try Self.restore(vsockLike, bytes) }
    }
}

/// A device that does not save its state.
private final class StatelessDevice: VirtioDevice {
    var deviceType: VirtioDeviceType { .entropy }
    var offeredFeatures: VirtioFeatures { .transportDefaults }
    var queueMaxSizes: [UInt16] { [8] }
    var configuration: [UInt8] { [] }
    func activate(_ activation: VirtioActivation) throws(VirtioDeviceError) {}
    func queueNotified(_ index: Int) {}
    func reset() {}
}

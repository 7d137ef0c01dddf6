import Glibc
import HVCore
@testable import HVDevices
import HVDevicesTesting
import HVTestSupport
import SystemPackage
import Testing

/// Calls `answer` for every write.
private final class AnsweringSink: ByteSink {
    let answer: @Sendable () -> Void
    init(answer: @escaping @Sendable () -> Void) { self.answer = answer }
    func write(_ bytes: UnsafeRawBufferPointer) { answer() }
}

private struct ConsoleRig {
    let memory: GuestMemoryMmap
    let sink = CollectingSink()
    let device: ConsoleDevice
    let mmio: MMIODriver
    var receive: DriverQueue
    var transmit: DriverQueue

    init() throws {
        memory = try testMemory()
        device = ConsoleDevice(output: sink, columns: 120, rows: 40, queueSize: 16)
        let transport = VirtioMMIOTransport(device: device, memory: memory, interruptLine: CountingInterruptLine())
        mmio = MMIODriver(transport: transport)
        receive = try DriverQueue(memory: memory, size: 16, base: GuestAddress(0x1000))
        transmit = try DriverQueue(memory: memory, size: 16, base: GuestAddress(0x3000))
        mmio.initialize(queues: [receive, transmit])
    }
}

@Suite("virtio-console")
struct ConsoleDeviceTests {
    @Test func transmitsGuestOutput() throws {
        var rig = try ConsoleRig()
        try rig.memory.write(Array("Hello, ".utf8), to: GuestAddress(0x8000))
        try rig.memory.write(Array("console".utf8), to: GuestAddress(0x9000))
        try rig.transmit.addChain([(GuestAddress(0x8000), 7, false), (GuestAddress(0x9000), 7, false)])
        rig.mmio.notify(1)
        #expect(rig.sink.text == "Hello, console")
        #expect(try rig.transmit.takeUsed().map(\.length) == [0])
    }

    @Test func reportsItsSize() throws {
        let rig = try ConsoleRig()
        #expect(rig.mmio.transport.read(offset: 0x100, width: .word) == 120)
        #expect(rig.mmio.transport.read(offset: 0x102, width: .word) == 40)
    }

    @Test func emergencyWriteGoesStraightToTheSink() throws {
        let rig = try ConsoleRig()
        rig.mmio.transport.write(offset: 0x108, width: .doubleWord, value: UInt64(UInt8(ascii: "!")))
        #expect(rig.sink.text == "!")
    }

    @Test func inputWaitsForBuffersAndFillsThemInOrder() throws {
        var rig = try ConsoleRig()
        rig.device.receive(Array("abc".utf8))
        #expect(try rig.receive.takeUsed().isEmpty)
        try rig.receive.addChain([(GuestAddress(0xA000), 2, true)])
        try rig.receive.addChain([(GuestAddress(0xB000), 8, true)])
        rig.mmio.notify(0)
        #expect(try rig.receive.takeUsed().map(\.length) == [2, 1])
        #expect(try rig.memory.readBytes(at: GuestAddress(0xA000), count: 2) == Array("ab".utf8))
        #expect(try rig.memory.read(UInt8.self, at: GuestAddress(0xB000)) == UInt8(ascii: "c"))
    }

    @Test func inputFromADescriptorReachesTheGuest() throws {
        var rig = try ConsoleRig()
        let loop = try EventLoop(name: "console-test")
        defer { loop.shutdown() }
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        defer { close(ends[0]); close(ends[1]) }
        try rig.device.attachInput(FileDescriptor(rawValue: ends[0]), eventLoop: loop)
        try rig.receive.addChain([(GuestAddress(0xA000), 16, true)])
        rig.mmio.notify(0)
        _ = "typed".withCString { write(ends[1], $0, 5) }
        var used: [(id: UInt32, length: UInt32)] = []
        #expect(try waitUntil { used += try rig.receive.takeUsed(); return !used.isEmpty })
        #expect(try rig.memory.readBytes(at: GuestAddress(0xA000), count: Int(used[0].length)) == Array("typed".prefix(Int(used[0].length)).utf8))
    }

    /// A sink that answers the guest's output (a host program talking to the guest) calls
    /// back into the device from inside the output path: it must not deadlock, and the answer
    /// must reach the guest.
    @Test func aSinkMayAnswerFromInsideTheOutputPath() throws {
        let memory = try testMemory()
        let device = Locked<ConsoleDevice?>(nil)
        let answering = AnsweringSink { device.withLock { $0 }?.receive(Array("pong".utf8)) }
        let console = ConsoleDevice(output: answering, queueSize: 16)
        device.withLock { $0 = console }
        // The sink reaches the device through `device`: break that cycle at the end.
        defer { device.withLock { $0 = nil } }
        let transport = VirtioMMIOTransport(device: console, memory: memory, interruptLine: CountingInterruptLine())
        let mmio = MMIODriver(transport: transport)
        var receive = try DriverQueue(memory: memory, size: 16, base: GuestAddress(0x1000))
        var transmit = try DriverQueue(memory: memory, size: 16, base: GuestAddress(0x3000))
        mmio.initialize(queues: [receive, transmit])
        try receive.addChain([(GuestAddress(0xA000), 16, true)])
        mmio.notify(0)
        try memory.write(Array("ping".utf8), to: GuestAddress(0x8000))
        try transmit.addChain([(GuestAddress(0x8000), 4, false)])
        mmio.notify(1)
        #expect(try receive.takeUsed().map(\.length) == [4])
        #expect(try memory.readBytes(at: GuestAddress(0xA000), count: 4) == Array("pong".utf8))
    }

    @Test func readOnlyReceiveBuffersAreReturnedEmpty() throws {
        var rig = try ConsoleRig()
        try rig.receive.addChain([(GuestAddress(0xA000), 16, false)])
        rig.mmio.notify(0)
        #expect(try rig.receive.takeUsed().map(\.length) == [0])
    }
}

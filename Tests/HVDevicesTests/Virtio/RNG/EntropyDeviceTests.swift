import HVCore
@testable import HVDevices
import HVDevicesTesting
import HVTestSupport
import Testing

@Suite("virtio-rng")
struct EntropyDeviceTests {
    private func rig(maxBytes: UInt32 = 64 << 10) throws -> (GuestMemoryMmap, MMIODriver, DriverQueue) {
        let memory = try testMemory()
        let transport = VirtioMMIOTransport(device: EntropyDevice(queueSize: 8, maxBytesPerRequest: maxBytes), memory: memory, interruptLine: CountingInterruptLine())
        let driver = MMIODriver(transport: transport)
        let queue = try DriverQueue(memory: memory, size: 8)
        driver.initialize(queues: [queue])
        return (memory, driver, queue)
    }

    @Test func fillsEveryWritableBuffer() throws {
        var (memory, driver, queue) = try rig()
        try queue.addChain([(GuestAddress(0x8000), 100, true), (GuestAddress(0x20_0000), 4096, true)])
        driver.notify(0)
        #expect(try queue.takeUsed().map(\.length) == [4196])
        #expect(try memory.readBytes(at: GuestAddress(0x20_0000), count: 4096).contains { $0 != 0 })
    }

    @Test func requestsAreBounded() throws {
        var (memory, driver, queue) = try rig(maxBytes: 256)
        try memory.fill(0, at: GuestAddress(0x8000), length: 1024)
        try queue.addChain([(GuestAddress(0x8000), 1024, true)])
        driver.notify(0)
        #expect(try queue.takeUsed().map(\.length) == [256])
        #expect(try memory.readBytes(at: GuestAddress(0x8000 + 256), count: 768).allSatisfy { $0 == 0 })
    }

    @Test func readableBuffersGetNothing() throws {
        var (memory, driver, queue) = try rig()
        try memory.fill(0, at: GuestAddress(0x8000), length: 64)
        try queue.addChain([(GuestAddress(0x8000), 64, false)])
        driver.notify(0)
        #expect(try queue.takeUsed().map(\.length) == [0])
        #expect(try memory.readBytes(at: GuestAddress(0x8000), count: 64).allSatisfy { $0 == 0 })
    }
}

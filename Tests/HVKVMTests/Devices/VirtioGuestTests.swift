import HVTestSupport
import HVCore
import HVDevices
import HVDevicesTesting
import HVKVM
import Synchronization
import SystemPackage
import Testing

/// Forwards to a device and counts the writes that reach it through the bus, so a test can
/// tell an MMIO exit from a kick the kernel absorbed with an ioeventfd.
private final class CountingProxy: BusDevice {
    let target: any BusDevice
    let notifyWrites = Atomic<Int>(0)
    init(_ target: any BusDevice) { self.target = target }
    func read(offset: UInt64, width: AccessWidth) -> UInt64 { target.read(offset: offset, width: width) }
    func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        if offset == MMIORegister.queueNotify.rawValue { notifyWrites.add(1, ordering: .relaxed) }
        target.write(offset: offset, width: width, value: value)
    }
}

// Interrupts are counted, not injected: an irqfd needs the in-kernel irqchip, and with it the
// guest's final HLT would wait in the kernel for an interrupt instead of ending the test.

/// A real guest drives HVDevices' virtio-mmio transport and entropy device through KVM.
@Suite("virtio-mmio driven by a guest", .requiresKVM)
struct VirtioGuestTests {
    static let base = GuestAddress(0xD000_0000)

    private func runRNGGuest(useIOEventFD: Bool) async throws -> (report: [UInt64], transport: VirtioMMIOTransport, busNotifies: Int, memory: GuestMemoryMmap) {
        let vm = try TestVM(code: TestGuests.virtioRng)
        let line = CountingInterruptLine()
        let transport = VirtioMMIOTransport(device: EntropyDevice(queueSize: 8), memory: vm.memory, interruptLine: line)
        let proxy = CountingProxy(transport)
        try vm.mmio.register(proxy, at: Self.base, length: VirtioMMIOTransport.windowSize)
        let ports = EchoDevice()
        try vm.pio.register(ports, at: GuestAddress(0x10), length: 8)
        let loop = try EventLoop(name: "virtio-test")
        defer { loop.shutdown() }
        if useIOEventFD {
            for notifier in try transport.attachNotifiers(on: loop) {
                let address = try Self.base.checkedAdd(notifier.registerOffset)
                try vm.vm.registerIOEventFD(notifier.eventFD, address: address, length: 4, space: .mmio, dataMatch: notifier.dataMatch)
            }
        }
        let (reason, timedOut) = try await vm.run(setup: try vm.longMode())
        #expect(!timedOut)
        #expect(reason == .halted(vcpu: 0))
        #expect(line.count == 1)
        return (ports.writes.map(\.value), transport, proxy.notifyWrites.load(ordering: .relaxed), vm.memory)
    }

    @Test func guestGetsRandomBytesWithAnMMIOExitKick() async throws {
        let result = try await runRNGGuest(useIOEventFD: false)
        #expect(result.report == [16, 0xF])
        #expect(result.busNotifies == 1)
        #expect(result.transport.notificationCount == 1)
        #expect(try result.memory.readBytes(at: GuestAddress(0xC000), count: 16).contains { $0 != 0 })
        #expect(result.transport.refusedAccessCount == 0)
    }

    @Test func guestGetsRandomBytesWithAnIOEventFDKick() async throws {
        let result = try await runRNGGuest(useIOEventFD: true)
        #expect(result.report == [16, 0xF])
        // The kernel absorbed the kick: the bus never saw it, the device still got it.
        #expect(result.busNotifies == 0)
        #expect(result.transport.notificationCount == 1)
        #expect(try result.memory.readBytes(at: GuestAddress(0xC000), count: 16).contains { $0 != 0 })
    }
}

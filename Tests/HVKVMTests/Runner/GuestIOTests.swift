import HVTestSupport
import HVCore
import HVKVM
import Testing

/// Guests that do port I/O and MMIO of each width; every value the device returns comes
/// back from the guest incremented by one, through a device registered on the bus.
@Suite("Guest port I/O and MMIO round trips", .requiresKVM)
struct GuestIOTests {
    @Test func realModeRoundTripsEachWidth() async throws {
        // The real-mode guest runs at 0x1000:0000; MMIO is at 0xD0000, above its 64 KiB RAM.
        let vm = try TestVM(code: TestGuests.realModeIo, memory: GuestMemoryMmap(size: 128 << 10))
        let (port, mmio) = try vm.attachEchoDevices(mmioBase: GuestAddress(0xD0000))
        let (reason, timedOut) = try await vm.run { vcpu throws(KVMError) in
            try vcpu.setupRealMode(codeSegment: 0x1000, offset: 0)
        }
        #expect(!timedOut)
        #expect(reason == .halted(vcpu: 0))
        #expect(port.writes.map(\.value) == [0x12, 0x2223, 0x3333_3334])
        #expect(port.writes.map(\.width) == [1, 2, 4])
        #expect(mmio.writes == [
            .init(isWrite: true, offset: 0, width: 1, value: 0x12),
            .init(isWrite: true, offset: 2, width: 2, value: 0x2223),
            .init(isWrite: true, offset: 4, width: 4, value: 0x3333_3334),
        ])
    }

    @Test func protectedModeRoundTrips() async throws {
        let vm = try TestVM(code: TestGuests.protectedModeIo)
        let (port, mmio) = try vm.attachEchoDevices(mmioBase: GuestAddress(0xD000_0000))
        let memory = vm.memory
        let (reason, timedOut) = try await vm.run { vcpu throws(KVMError) in
            try vcpu.setupProtectedMode(memory: memory, entry: TestVM.entry, stackPointer: TestVM.stackTop)
        }
        #expect(!timedOut)
        #expect(reason == .halted(vcpu: 0))
        #expect(port.writes.map(\.value) == [0x3333_3334])
        #expect(mmio.writes.map(\.value) == [0x3333_3334])
        let sregs = try vm.vm.createVCPU(id: 1).specialRegisters()
        #expect(sregs.cr0 & X86.cr0ProtectionEnable == 0, "a fresh vCPU starts in real mode")
    }

    @Test func longModeRoundTripsEachWidth() async throws {
        let vm = try TestVM(code: TestGuests.longModeIo)
        let (port, mmio) = try vm.attachEchoDevices(mmioBase: GuestAddress(0xD000_0000), mmioLength: 0x1000)
        let (reason, timedOut) = try await vm.run(setup: try vm.longMode())
        #expect(!timedOut)
        #expect(reason == .halted(vcpu: 0))
        #expect(port.writes.map(\.value) == [0x12, 0x2223, 0x3333_3334])
        #expect(mmio.writes == [
            .init(isWrite: true, offset: 0, width: 1, value: 0x12),
            .init(isWrite: true, offset: 2, width: 2, value: 0x2223),
            .init(isWrite: true, offset: 4, width: 4, value: 0x3333_3334),
            .init(isWrite: true, offset: 8, width: 8, value: 0x4444_4444_4444_4445),
        ])
        #expect(vm.pio.unhandledReads == 0 && vm.mmio.unhandledWrites == 0)
    }
}

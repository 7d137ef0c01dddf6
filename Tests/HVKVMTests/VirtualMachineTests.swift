import HVTestSupport
import HVCore
import HVKVM
import SystemPackage
import Testing

@Suite("VirtualMachine", .requiresKVM)
struct VirtualMachineTests {
    @Test("two VMs in one process, each with its own memory, do not see each other's writes")
    func twoVMsAreIsolated() async throws {
        let first = try TestVM(code: TestGuests.readReport)
        let second = try TestVM(code: TestGuests.readReport)
        try first.memory.write(UInt32(0x1111_1111), at: GuestAddress(0xA000))
        try second.memory.write(UInt32(0x2222_2222), at: GuestAddress(0xA000))
        let firstPort = EchoDevice()
        let secondPort = EchoDevice()
        try first.pio.register(firstPort, at: GuestAddress(0x10), length: 4)
        try second.pio.register(secondPort, at: GuestAddress(0x10), length: 4)

        async let firstRun = first.run(setup: try first.longMode())
        async let secondRun = second.run(setup: try second.longMode())
        let (a, b) = try await (firstRun, secondRun)
        #expect(a.reason == .halted(vcpu: 0) && b.reason == .halted(vcpu: 0))
        #expect(firstPort.writes.map(\.value) == [0x1111_1111])
        #expect(secondPort.writes.map(\.value) == [0x2222_2222])
        #expect(try first.memory.read(UInt32.self, at: GuestAddress(0xA004)) == 0x1111_1111)
        #expect(try second.memory.read(UInt32.self, at: GuestAddress(0xA004)) == 0x2222_2222)
    }

    @Test func dirtyPageLogReportsGuestWrites() async throws {
        let vm = try TestVM(code: TestGuests.readReport, logDirtyPages: true)
        let slot = try #require(vm.vm.memorySlots.first?.slot)
        _ = try vm.vm.dirtyPages(slot: slot)  // Start from a clean log.
        let (reason, _) = try await vm.run(setup: try vm.longMode())
        #expect(reason == .halted(vcpu: 0))
        let dirty = try vm.vm.dirtyPages(slot: slot)
        #expect(dirty.contains(0xA), "the guest wrote 0xA004")
        #expect(!dirty.contains(0x80), "nothing touched 0x80000")
        #expect(try vm.vm.dirtyPages(slot: slot).isEmpty, "reading the log resets it")
        try vm.vm.setDirtyLogging(slot: slot, enabled: false)
        #expect(throws: KVMError.self) { try vm.vm.dirtyPages(slot: slot) }
        #expect(throws: KVMError.self) { try vm.vm.dirtyPages(slot: 77) }
    }

    @Test("an MMIO ioeventfd counts guest writes without an exit to userspace")
    func ioeventfdCountsWrites() async throws {
        let vm = try TestVM(code: TestGuests.mmioNotify)
        let eventfd = try EventFD(nonBlocking: true)
        try vm.vm.registerIOEventFD(eventfd, address: GuestAddress(0xD000_0000), length: 4, space: .mmio)
        let (reason, timedOut) = try await vm.run(setup: try vm.longMode())
        #expect(!timedOut && reason == .halted(vcpu: 0))
        #expect(try eventfd.consume() == 5)
        #expect(vm.mmio.unhandledWrites == 0, "no write reached userspace")
        try vm.vm.unregisterIOEventFD(eventfd, address: GuestAddress(0xD000_0000), length: 4, space: .mmio)
        #expect(throws: KVMError.self) {
            try vm.vm.registerIOEventFD(eventfd, address: GuestAddress(0x10), length: 3, space: .pio)
        }
    }

    @Test("a read-only slot lets the guest read and turns its writes into MMIO exits")
    func readOnlySlot() async throws {
        let kvm = try KVM()
        try #require(kvm.has(.readOnlyMemory), "host lacks KVM_CAP_READONLY_MEM")
        let memory = try GuestMemoryMmap([
            MemoryRegionSpec(start: GuestAddress(0), size: 1 << 20),
            MemoryRegionSpec(start: GuestAddress(1 << 20), size: 0x1000, backing: .memfd(name: "rom"), options: [.readOnly]),
        ])
        // Put a value in the "ROM" through its memfd, since the mapping itself is read-only.
        let rom = try #require(memory.regions.last?.fileDescriptor)
        _ = try rom.writeAll(toAbsoluteOffset: 0, [0x41, 0, 0, 0])
        let vm = try TestVM(code: TestGuests.readonlyWrite, memory: memory)
        let device = EchoDevice()
        try vm.mmio.register(device, at: GuestAddress(1 << 20), length: 4)
        let (reason, _) = try await vm.run(setup: try vm.longMode())
        #expect(reason == .halted(vcpu: 0))
        #expect(device.writes.map(\.value) == [0x42])
        #expect(try memory.read(UInt32.self, at: GuestAddress(1 << 20)) == 0x41)
    }

    @Test func irqchipPITAndIRQFD() throws {
        let kvm = try KVM()
        let vm = try kvm.createVM()
        #expect(!vm.hasIRQChip)
        try vm.setTSSAddress(GuestAddress(0xFFFB_D000))
        try vm.setIdentityMapAddress(GuestAddress(0xFFFB_C000))
        try vm.createIRQChip()
        #expect(vm.hasIRQChip)
        try vm.createPIT()
        let line = try vm.makeInterruptLine(gsi: 5)
        try line.trigger()
        try vm.setIRQLine(4, level: true)
        try vm.setIRQLine(4, level: false)
        try vm.unregisterIRQFD(line.eventfd, gsi: 5)
        #expect(throws: KVMError.self) { try vm.createIRQChip() }
    }
}

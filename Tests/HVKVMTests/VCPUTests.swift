import HVTestSupport
import HVCore
import HVKVM
import Testing

/// Register access on a vCPU created on the test's own thread (synchronous tests stay on one
/// thread, as KVM wants).
@Suite("VCPU registers", .requiresKVM)
struct VCPUTests {
    @Test func generalAndSpecialRegistersRoundTrip() throws {
        let vm = try TestVM(code: TestGuests.spin)
        let vcpu = try vm.vm.createVCPU(id: 0)
        var regs = Registers()
        regs.rax = 0x1122_3344_5566_7788
        regs.r15 = 0xF15
        regs.rip = 0x10000
        regs.rflags = 0x202
        try vcpu.setRegisters(regs)
        #expect(try vcpu.registers() == regs)

        try vcpu.setupLongMode(memory: vm.memory, entry: TestVM.entry, stackPointer: 0x8000)
        let sregs = try vcpu.specialRegisters()
        #expect(sregs.efer & X86.eferLongModeActive != 0)
        #expect(sregs.cs.l && sregs.cs.selector == GDTSelector.code)
        #expect(sregs.cr3 == 0x1000)
        #expect(try vcpu.registers().rip == TestVM.entry.rawValue)
    }

    @Test func fpuDebugMSRAndCPUIDRoundTrip() throws {
        let vm = try TestVM(code: TestGuests.spin)
        let vcpu = try vm.vm.createVCPU(id: 0)
        var fpu = try vcpu.fpuRegisters()
        fpu.xmm[3] = 0x0123_4567_89AB_CDEF_FEDC_BA98_7654_3210
        fpu.mxcsr = 0x1F80
        try vcpu.setFPURegisters(fpu)
        #expect(try vcpu.fpuRegisters().xmm[3] == 0x0123_4567_89AB_CDEF_FEDC_BA98_7654_3210)

        var debug = try vcpu.debugRegisters()
        debug.db[2] = 0xDEAD_0000
        try vcpu.setDebugRegisters(debug)
        #expect(try vcpu.debugRegisters().db[2] == 0xDEAD_0000)

        try vcpu.setMSRs([(index: 0x174, value: 0x10)])  // IA32_SYSENTER_CS
        #expect(try vcpu.msrs([0x174])[0x174] == 0x10)
        #expect(throws: KVMError.self) { try vcpu.msrs([0xDEAD_BEEF]) }

        let supported = try vm.kvm.supportedCPUID()
        try vcpu.setCPUID(supported)
        let current = try vcpu.cpuid()
        #expect(current.count == supported.count)
        #expect(current.first { $0.function == 0 }?.ebx == supported.first { $0.function == 0 }?.ebx)
        #expect(throws: KVMError.self) {
            try vcpu.setCPUID(Array(repeating: supported[0], count: 300))
        }
    }

    @Test func lapicAndMPState() throws {
        let kvm = try KVM()
        let vm = try kvm.createVM()
        try vm.createIRQChip()
        let vcpu = try vm.createVCPU(id: 3)
        var lapic = try vcpu.lapic()
        #expect(lapic[register: 0x20] >> 24 == 3, "the APIC ID is the vCPU id")
        lapic[register: 0x380] = 0x1234  // Initial count of the APIC timer.
        try vcpu.setLAPIC(lapic)
        #expect(try vcpu.lapic()[register: 0x380] == 0x1234)
        #expect(lapic[register: 4096] == 0, "out-of-range registers read as 0")
        #expect(try vcpu.mpState() != .halted)
        try vcpu.setMPState(.runnable)
        #expect(try vcpu.mpState() == .runnable)
    }

    @Test("registers written through the sync area reach the guest without an ioctl")
    func syncRegisters() throws {
        let vm = try TestVM(code: TestGuests.syncRegs)
        let vcpu = try vm.makeLongModeVCPU()
        var regs = try vcpu.registers()
        regs.rax = 7
        try vcpu.setRegisters(regs)
        guard vm.kvm.has(.syncRegisters) else { return }
        try vcpu.enableSyncRegisters([.general])

        guard case let .ioOut(port, size, data) = try vcpu.run() else {
            Issue.record("expected an out")
            return
        }
        #expect(port == 0x10 && size == 4 && data.value(width: 4) == 7)
        var synced = try vcpu.registers()
        #expect(synced.rax == 7)
        synced.rax = 0x41
        try vcpu.setRegisters(synced)  // Through kvm_run, applied on the next entry.
        guard case let .ioOut(_, _, second) = try vcpu.run() else {
            Issue.record("expected a second out")
            return
        }
        #expect(second.value(width: 4) == 0x42)
        try vcpu.disableSyncRegisters()
        #expect(try vcpu.registers().rax == 0x42)
        #expect(try vcpu.run().isHalt)
    }

    @Test("exit data kept past the next run, or past its vCPU, reads as empty and drops writes")
    func staleExitData() throws {
        let vm = try TestVM(code: TestGuests.syncRegs)  // out, inc eax, out, hlt
        var vcpu: VCPU? = try vm.makeLongModeVCPU()
        var regs = try #require(vcpu).registers()
        regs.rax = 0x1234_5678
        try #require(vcpu).setRegisters(regs)

        guard case let .ioOut(_, _, first) = try #require(vcpu).run() else {
            Issue.record("expected an out")
            return
        }
        #expect(first.isCurrent && first.count == 4 && first.value(width: 4) == 0x1234_5678)
        guard case let .ioOut(_, _, second) = try #require(vcpu).run() else {
            Issue.record("expected a second out")
            return
        }
        // Both point at the same bytes of kvm_run; only the second may reach them.
        #expect(!first.isCurrent && first.count == 0 && first.bytes.isEmpty)
        #expect(first.value(width: 4) == 0 && first[0] == 0)
        first.setValue(0xFFFF_FFFF, width: 4)
        first[1] = 0xEE
        #expect(second.isCurrent && second.value(width: 4) == 0x1234_5679)

        vcpu = nil
        #expect(!second.isCurrent && second.count == 0, "the vCPU is gone")
        second.setValue(1, width: 4)  // Must not touch the (still mapped) page.
    }

    @Test("a kick before entry makes the next run return at once")
    func kickBeforeRun() throws {
        let vm = try TestVM(code: TestGuests.spin)
        let vcpu = try vm.makeLongModeVCPU()
        vcpu.kicker.kick()
        guard case .interrupted = try vcpu.run() else {
            Issue.record("a kicked vCPU entered the guest")
            return
        }
    }
}

extension VMExit {
    var isHalt: Bool {
        if case .halt = self { return true }
        return false
    }
}

@Suite("Segment descriptors")
struct SegmentDescriptorTests {
    @Test("flat segments encode as the well-known GDT entries", arguments: [
        (Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x08, type: 0xB, l: true, g: true), UInt64(0x00AF_9B00_0000_FFFF)),
        (Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x08, type: 0xB, db: true, g: true), UInt64(0x00CF_9B00_0000_FFFF)),
        (Segment(base: 0, limit: 0xFFFF_FFFF, selector: 0x10, type: 0x3, db: true, g: true), UInt64(0x00CF_9300_0000_FFFF)),
        (Segment(base: 0x1234_5678, limit: 0x67, selector: 0x18, type: 0xB, s: false), UInt64(0x1200_8B34_5678_0067)),
    ])
    func encoding(segment: Segment, expected: UInt64) {
        #expect(segment.gdtEntry == expected)
    }
}

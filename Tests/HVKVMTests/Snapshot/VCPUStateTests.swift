import HVCore
import HVKVM
import HVTestSupport
import Testing

@Suite("vCPU state", .requiresKVM)
struct VCPUStateTests {
    /// The state encodes and decodes to itself, and everything restored into a fresh VM's
    /// vCPU reads back as it was saved.
    @Test func everyFieldRoundTripsThroughAFreshVM() throws {
        let source = try TestVM(code: TestGuests.spin)
        try source.vm.createIRQChip()
        let vcpu = try source.makeLongModeVCPU()
        var regs = try vcpu.registers()
        regs.rax = 0x1122_3344_5566_7788
        regs.r13 = 0x1313
        try vcpu.setRegisters(regs)
        // XMM5 through the XSAVE area (bytes 160 + 16 * 5 of the legacy region), with the SSE
        // bit of XSTATE_BV (byte 512) set so that it counts.
        var area = try vcpu.xsaveArea()
        for index in 0..<16 { area[160 + 5 * 16 + index] = UInt8(0x10 + index) }
        area[512] |= 0b10
        try vcpu.setXSAVEArea(area)
        let xmm5 = try vcpu.fpuRegisters().xmm[5]
        #expect(xmm5 == 0x1F1E_1D1C_1B1A_1918_1716_1514_1312_1110)
        var debug = try vcpu.debugRegisters()
        debug.db[1] = 0xBEEF_0000
        try vcpu.setDebugRegisters(debug)
        try vcpu.setMSRs([(index: 0x174, value: 0x10), (index: 0xC000_0102, value: 0xABCD_0000)])  // SYSENTER_CS, KERNEL_GS_BASE
        var lapic = try vcpu.lapic()
        lapic[register: 0x80] = 0x20  // Task priority.
        try vcpu.setLAPIC(lapic)

        let saved = try vcpu.saveState()
        #expect(saved.xsave.count >= 4096)
        #expect(saved.msrs.contains { $0.index == 0x174 && $0.value == 0x10 })
        #expect(saved.extendedControlRegisters.first?.index == 0)
        #expect(saved.tscKHz > 0)
        var encoder = SnapshotEncoder()
        encoder.append(saved)
        var decoder = SnapshotDecoder(encoder.bytes, context: "vcpu")
        let decoded = try decoder.read(VCPUState.self)
        try decoder.expectEnd()
        #expect(decoded == saved)

        let target = try TestVM(code: TestGuests.spin)
        try target.vm.createIRQChip()
        let restored = try target.vm.createVCPU(id: 0)
        try restored.restoreState(decoded)
        let again = try restored.saveState()
        #expect(again.registers == saved.registers)
        #expect(again.specialRegisters == saved.specialRegisters)
        #expect(again.mpState == saved.mpState)
        #expect(again.xsave == saved.xsave)
        #expect(again.extendedControlRegisters == saved.extendedControlRegisters)
        #expect(again.debugRegisters == saved.debugRegisters)
        #expect(again.lapic?[register: 0x80] == 0x20)
        #expect(again.cpuid == saved.cpuid)
        #expect(again.tscKHz == saved.tscKHz)
        #expect(again.events == saved.events)
        // Every MSR but the time stamp counter, which moves on.
        let timeStampCounter: UInt32 = 0x10
        #expect(again.msrs.filter { $0.index != timeStampCounter } == saved.msrs.filter { $0.index != timeStampCounter })
        #expect(try restored.fpuRegisters().xmm[5] == xmm5)
    }

    /// A state saved right after a port read exit, whose data the VMM supplied, resumes with
    /// the data in AL and after the instruction: the save completes the read first (an
    /// immediate-exit entry), as the KVM API asks, or the restored guest would miss it.
    @Test func aStateSavedAfterAnExitResumesAfterItsInstruction() throws {
        let source = try TestVM(code: TestGuests.longModeIo)  // in al; inc al; out al; ...
        let vcpu = try source.makeLongModeVCPU()
        guard case let .ioIn(port, size, data) = try vcpu.run() else {
            Issue.record("expected an in")
            return
        }
        #expect(port == 0x10 && size == 1)
        data.setValue(0x41, width: 1)
        let saved = try vcpu.saveState()

        let target = try TestVM(code: TestGuests.longModeIo)
        try target.memory.write(try source.memory.readBytes(at: GuestAddress(0), count: 1 << 20), to: GuestAddress(0))
        let restored = try target.vm.createVCPU(id: 0)
        try restored.restoreState(saved)
        guard case let .ioOut(_, _, written) = try restored.run() else {
            Issue.record("expected the out that follows the in")
            return
        }
        #expect(written.value(width: 1) == 0x42)
    }

    @Test func aStateIsRefusedByAnotherVCPUOrWithDamagedEvents() throws {
        let source = try TestVM(code: TestGuests.spin)
        let vcpu = try source.makeLongModeVCPU()
        var saved = try vcpu.saveState()
        let other = try source.vm.createVCPU(id: 1)
        #expect(throws: KVMError.self) { try other.restoreState(saved) }
        saved.events.removeLast()
        #expect(throws: KVMError.self) { try vcpu.restoreState(saved) }
        #expect(throws: KVMError.self) { try vcpu.setXSAVEArea([UInt8](repeating: 0, count: 100)) }
    }
}

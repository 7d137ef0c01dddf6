import HVCore
import HVKVM
import HVTestSupport
import Testing

@Suite("VM state", .requiresKVM)
struct VMStateTests {
    /// The PICs, the IOAPIC, the PIT and the clock go into a fresh VM as they were saved.
    @Test func interruptControllersPITAndClockRoundTrip() throws {
        let source = try TestVM(code: TestGuests.spin)
        try source.vm.createIRQChip()
        try source.vm.createPIT()
        var saved = try source.vm.saveState()
        let chips = try #require(saved.interruptControllers)
        #expect(chips.primaryPIC.count == 512 && chips.ioapic.count == 512)
        // struct kvm_pic_state: last_irr, irr, imr. struct kvm_pit_state2 starts with channel
        // 0's 32-bit count.
        saved.interruptControllers?.primaryPIC[2] = 0xFB
        saved.interruptControllers?.secondaryPIC[2] = 0x7F
        var pit = try #require(saved.pit)
        pit[0] = 0x34
        pit[1] = 0x12
        saved.pit = pit
        saved.clock += 5_000_000_000

        var encoder = SnapshotEncoder()
        encoder.append(saved)
        var decoder = SnapshotDecoder(encoder.bytes, context: "vm")
        let decoded = try decoder.read(VMState.self)
        #expect(decoded == saved)

        let target = try TestVM(code: TestGuests.spin)
        try target.vm.createIRQChip()
        try target.vm.createPIT()
        try target.vm.restoreState(decoded)
        let again = try target.vm.saveState()
        #expect(again.interruptControllers?.primaryPIC[2] == 0xFB)
        #expect(again.interruptControllers?.secondaryPIC[2] == 0x7F)
        #expect(again.interruptControllers?.ioapic == saved.interruptControllers?.ioapic)
        #expect(again.pit.map { UInt16($0[0]) | UInt16($0[1]) << 8 } == 0x1234)
        #expect(again.clock >= saved.clock, "the clock went back: \(again.clock) < \(saved.clock)")
    }

    @Test func aVMWithoutTheSavedControllersRefusesTheirState() throws {
        let source = try TestVM(code: TestGuests.spin)
        try source.vm.createIRQChip()
        try source.vm.createPIT()
        let saved = try source.vm.saveState()
        let bare = try TestVM(code: TestGuests.spin)
        #expect(throws: KVMError.self) { try bare.vm.restoreState(saved) }

        var damaged = SnapshotEncoder()
        damaged.append(true)
        damaged.append(bytes: [UInt8](repeating: 0, count: 100))
        var decoder = SnapshotDecoder(damaged.bytes, context: "vm")
        #expect(throws: SnapshotError.self) { try decoder.read(VMState.self) }
    }
}

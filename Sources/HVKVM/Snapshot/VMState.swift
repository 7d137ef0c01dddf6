import CKVM
import HVCore

/// What KVM keeps of a VM outside its vCPUs and memory: the two 8259 PICs, the IOAPIC, the
/// PIT and the KVM clock, as a plain value. Saved while every vCPU is paused
/// (``VirtualMachine/saveState()``); restored into a new VM with the same irqchip and PIT,
/// before its vCPUs run (``VirtualMachine/restoreState(_:)``).
public struct VMState: Sendable, Hashable {
    /// The encoding version written by ``encode(to:)``.
    public static let encodingVersion: UInt16 = 1

    /// The in-kernel interrupt controllers, when the VM has them.
    public var interruptControllers: InterruptControllers?
    /// The in-kernel PIT (struct kvm_pit_state2 as KVM gives it), when the VM has one.
    public var pit: [UInt8]?
    /// The KVM clock in nanoseconds: what the guest's paravirtual clock read at the save.
    public var clock: UInt64

    /// The PICs and the IOAPIC, each as KVM_GET_IRQCHIP gives its 512-byte state.
    public struct InterruptControllers: Sendable, Hashable {
        /// The master 8259 PIC.
        public var primaryPIC: [UInt8]
        /// The slave 8259 PIC.
        public var secondaryPIC: [UInt8]
        /// The IOAPIC.
        public var ioapic: [UInt8]

        /// Controllers from their saved bytes.
        public init(primaryPIC: [UInt8], secondaryPIC: [UInt8], ioapic: [UInt8]) {
            self.primaryPIC = primaryPIC
            self.secondaryPIC = secondaryPIC
            self.ioapic = ioapic
        }
    }

    /// A VM state from its parts.
    public init(interruptControllers: InterruptControllers?, pit: [UInt8]?, clock: UInt64) {
        self.interruptControllers = interruptControllers
        self.pit = pit
        self.clock = clock
    }
}

extension VMState: SnapshotCodable {
    /// Writes the value's fields in order.
    public func encode(to encoder: inout SnapshotEncoder) {
        encoder.append(interruptControllers != nil)
        if let chips = interruptControllers {
            for chip in [chips.primaryPIC, chips.secondaryPIC, chips.ioapic] { encoder.append(bytes: chip) }
        }
        encoder.append(pit != nil)
        if let pit { encoder.append(bytes: pit) }
        encoder.append(clock)
    }

    /// Reads the fields ``encode(to:)`` wrote, refusing values that cannot be right.
    public init(from decoder: inout SnapshotDecoder) throws(SnapshotError) {
        let chipSize = VirtualMachine.irqchipStateSize
        if try decoder.read(Bool.self) {
            var chips: [[UInt8]] = []
            for name in ["primary PIC", "secondary PIC", "IOAPIC"] {
                let bytes = try decoder.readBytes(limit: chipSize)
                guard bytes.count == chipSize else {
                    throw .malformed(what: decoder.context, reason: "the \(name) has \(bytes.count) bytes, not \(chipSize)")
                }
                chips.append(bytes)
            }
            interruptControllers = InterruptControllers(primaryPIC: chips[0], secondaryPIC: chips[1], ioapic: chips[2])
        } else {
            interruptControllers = nil
        }
        if try decoder.read(Bool.self) {
            let bytes = try decoder.readBytes(limit: 4096)
            guard bytes.count == MemoryLayout<kvm_pit_state2>.size else {
                throw .malformed(what: decoder.context, reason: "the PIT has \(bytes.count) bytes, not \(MemoryLayout<kvm_pit_state2>.size)")
            }
            pit = bytes
        } else {
            pit = nil
        }
        clock = try decoder.read()
    }
}

extension VirtualMachine {
    /// The size of one interrupt controller's state in struct kvm_irqchip.
    static let irqchipStateSize = MemoryLayout<kvm_irqchip>.size - MemoryLayout<UInt32>.size * 2

    /// Saves the interrupt controllers, the PIT and the clock. Pause every vCPU first: a
    /// controller read while a vCPU delivers an interrupt may be saved half-way.
    public func saveState() throws(KVMError) -> VMState {
        var chips: VMState.InterruptControllers?
        var pit: [UInt8]?
        if hasIRQChip {
            chips = VMState.InterruptControllers(primaryPIC: try irqchip(KVM_IRQCHIP_PIC_MASTER), secondaryPIC: try irqchip(KVM_IRQCHIP_PIC_SLAVE),
                                                 ioapic: try irqchip(KVM_IRQCHIP_IOAPIC))
        }
        if hasPIT {
            var state = kvm_pit_state2()
            try kvmIoctl(fileDescriptor, CKVM_GET_PIT2, &state, "KVM_GET_PIT2")
            pit = rawBytes(of: state)
        }
        var clock = kvm_clock_data()
        try kvmIoctl(fileDescriptor, CKVM_GET_CLOCK, &clock, "KVM_GET_CLOCK")
        return VMState(interruptControllers: chips, pit: pit, clock: clock.clock)
    }

    /// Restores what ``saveState()`` saved into this VM, which must have the same in-kernel
    /// devices (irqchip, PIT) and must not run yet.
    public func restoreState(_ state: VMState) throws(KVMError) {
        if let chips = state.interruptControllers {
            guard hasIRQChip else { throw .invalidArgument("the saved VM had an in-kernel irqchip; this one has none") }
            try setIRQChip(KVM_IRQCHIP_PIC_MASTER, chips.primaryPIC)
            try setIRQChip(KVM_IRQCHIP_PIC_SLAVE, chips.secondaryPIC)
            try setIRQChip(KVM_IRQCHIP_IOAPIC, chips.ioapic)
        }
        if let saved = state.pit {
            guard hasPIT else { throw .invalidArgument("the saved VM had an in-kernel PIT; this one has none") }
            var pit = kvm_pit_state2()
            do { try loadRaw(saved, into: &pit, what: "the PIT") } catch { throw .invalidArgument("\(error)") }
            try kvmIoctl(fileDescriptor, CKVM_SET_PIT2, &pit, "KVM_SET_PIT2")
        }
        var clock = kvm_clock_data()
        clock.clock = state.clock
        try kvmIoctl(fileDescriptor, CKVM_SET_CLOCK, &clock, "KVM_SET_CLOCK")
    }

    private func irqchip(_ chip: Int32) throws(KVMError) -> [UInt8] {
        var state = kvm_irqchip()
        state.chip_id = UInt32(chip)
        try kvmIoctl(fileDescriptor, CKVM_GET_IRQCHIP, &state, "KVM_GET_IRQCHIP")
        return unsafe withUnsafeBytes(of: &state.chip) { unsafe Array($0) }
    }

    private func setIRQChip(_ chip: Int32, _ bytes: [UInt8]) throws(KVMError) {
        var state = kvm_irqchip()
        state.chip_id = UInt32(chip)
        guard bytes.count == Self.irqchipStateSize else {
            throw .invalidArgument("interrupt controller \(chip)'s state has \(bytes.count) bytes, not \(Self.irqchipStateSize)")
        }
        // SAFETY: exactly the union's size is copied into it; KVM checks the fields.
        unsafe withUnsafeMutableBytes(of: &state.chip) { destination in
            unsafe bytes.withUnsafeBytes { unsafe destination.copyMemory(from: $0) }
        }
        try kvmIoctl(fileDescriptor, CKVM_SET_IRQCHIP, &state, "KVM_SET_IRQCHIP")
    }
}

/// What a VM does when its guest resets: a triple fault (``StopReason/shutdown(vcpu:)``), a
/// reset system event, or ``VCPURunner/requestReset()`` from a reset device.
public enum ResetPolicy: Sendable {
    /// Runs while every vCPU is parked, before a restart: put guest memory back as it was at
    /// boot, reset devices. An error stops the VM with it.
    public typealias Preparation = @Sendable () throws(KVMError) -> Void

    /// The VM stops, with the reset as its reason.
    case stop
    /// Every vCPU is put back to its state right after setup and runs again, at most `limit`
    /// times; the reset after that stops the VM. Guest memory and devices are the
    /// embedder's to restore, in `prepare`.
    case restart(limit: Int, prepare: Preparation? = nil)
}

/// A vCPU's architectural state at one moment, as far as a restart needs it: general,
/// special and FPU registers, the local APIC (with an in-kernel irqchip) and the MP state (so
/// an application processor waits for its startup IPI again).
struct VCPUSnapshot: Sendable {
    let registers: Registers
    let specialRegisters: SpecialRegisters
    let fpu: FPURegisters
    let lapic: LAPICState?
    let mpState: MPState?

    /// Reads the state on the vCPU's own thread.
    init(of vcpu: VCPU) throws(KVMError) {
        registers = try vcpu.registers()
        specialRegisters = try vcpu.specialRegisters()
        fpu = try vcpu.fpuRegisters()
        let irqchip = vcpu.vm.hasIRQChip
        lapic = irqchip ? try vcpu.lapic() : nil
        mpState = irqchip ? try vcpu.mpState() : nil
    }

    /// Writes the state back, on the vCPU's own thread while it is out of the guest.
    func restore(to vcpu: VCPU) throws(KVMError) {
        try vcpu.setSpecialRegisters(specialRegisters)
        try vcpu.setRegisters(registers)
        try vcpu.setFPURegisters(fpu)
        if let lapic { try vcpu.setLAPIC(lapic) }
        if let mpState { try vcpu.setMPState(mpState) }
    }
}

import HVBoot
import HVCore

/// MSRs at a Linux 64-bit entry, as a firmware would leave them: fast string operations on
/// (IA32_MISC_ENABLE), MTRRs on with write-back as the default type, and the system-call and
/// GS-base MSRs cleared.
public enum LinuxEntryMSRs {
    /// Each MSR's index and value.
    public static let values: [(index: UInt32, value: UInt64)] = [
        (0x174, 0), (0x175, 0), (0x176, 0),  // IA32_SYSENTER_CS, _ESP, _EIP
        (0xC000_0081, 0), (0xC000_0082, 0), (0xC000_0083, 0), (0xC000_0084, 0),  // STAR, LSTAR, CSTAR, SFMASK
        (0xC000_0102, 0),  // KERNEL_GS_BASE
        (0x1A0, 1),  // IA32_MISC_ENABLE: fast strings
        (0x2FF, (1 << 11) | 6),  // IA32_MTRR_DEF_TYPE: enabled, write-back
    ]
}

extension VCPU {
    /// Puts the vCPU at the plan's entry, with interrupts off and the MSRs of
    /// ``LinuxEntryMSRs`` (those the host lets a guest have):
    /// - 64-bit protocol: long mode with identity page tables (`LinuxBootLayout/longMode`),
    ///   RSI pointing at the zero page, the layout's stack.
    /// - PVH: 32-bit protected mode with flat segments and a TSS (the GDT at the layout's
    ///   `LongModeLayout/gdtAddress`), paging off, EBX pointing at the start info.
    public func setupLinuxBoot(_ plan: LinuxBootPlan, memory: some GuestMemory) throws(KVMError) {
        let stack = plan.layout.stackPointer
        switch plan.bootProtocol {
        case .linux64:
            try setupLongMode(memory: memory, entry: plan.entry, stackPointer: stack, layout: plan.layout.longMode)
            var registers = try registers()
            registers.rsi = plan.zeroPageAddress.rawValue
            registers.rbp = stack
            try setRegisters(registers)
        case .pvh:
            try setupProtectedMode(memory: memory, entry: plan.entry, stackPointer: stack, gdtAddress: plan.layout.longMode.gdtAddress)
            var registers = try registers()
            registers.rbx = plan.layout.startInfo.rawValue
            try setRegisters(registers)
        }
        let available = Set(try vm.kvm.msrIndexList())
        try setMSRs(LinuxEntryMSRs.values.filter { available.contains($0.index) || $0.index == 0x1A0 || $0.index == 0x2FF })
    }
}

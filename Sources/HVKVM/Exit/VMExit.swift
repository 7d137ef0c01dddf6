import HVCore

/// Why `KVM_RUN` returned, decoded. Exits that carry data point into the vCPU's kvm_run page
/// (see ``ExitData``) and are only valid until the next run.
public enum VMExit {
    /// The guest executed `in` (or `ins`); store the result in `data`. `size` is the width of
    /// one access (1, 2 or 4); `data.count / size` accesses are pending.
    case ioIn(port: UInt16, size: Int, data: ExitData)
    /// The guest executed `out` (or `outs`).
    case ioOut(port: UInt16, size: Int, data: ExitData)
    /// The guest read memory that is not RAM; store the value in `data` (`data.count` bytes).
    case mmioRead(address: GuestAddress, data: ExitData)
    /// The guest wrote memory that is not RAM.
    case mmioWrite(address: GuestAddress, data: ExitData)
    /// `hlt` with no in-kernel irqchip (with one, KVM waits for an interrupt instead).
    case halt
    /// The guest shut down, normally by a triple fault.
    case shutdown
    /// A system event: the guest asked for a reset, a power-off, or crashed (PSCI, ACPI...).
    case systemEvent(SystemEvent)
    /// KVM could not emulate something; `suberror` is a KVM_INTERNAL_ERROR_* code.
    case internalError(suberror: UInt32, data: [UInt64])
    /// Hardware refused to enter the guest; `reason` is the hardware's code.
    case failEntry(reason: UInt64, cpu: UInt32)
    /// `vmcall`/`vmmcall` forwarded to userspace (needs KVM_CAP_EXIT_HYPERCALL enabled);
    /// answer with ``VCPU/setHypercallResult(_:)``.
    case hypercall(number: UInt64, arguments: [UInt64], longMode: Bool)
    /// An exception KVM hands to userspace (rare on x86).
    case exception(number: UInt32, errorCode: UInt32)
    /// A debug exit (breakpoint or single step under KVM_SET_GUEST_DEBUG).
    case debug
    /// The run was interrupted by a signal or by `immediate_exit` (a kick); nothing happened
    /// in the guest that needs handling.
    case interrupted
    /// The guest can take an interrupt now (after `request_interrupt_window`).
    case interruptWindowOpen
    /// An exit reason HVKit does not decode, with KVM's raw KVM_EXIT_* value.
    case unknown(reason: UInt32)
}

/// The kinds of KVM_EXIT_SYSTEM_EVENT.
public enum SystemEvent: Hashable, Sendable {
    case shutdown
    case reset
    case crash
    case other(type: UInt32, flags: UInt64)
}

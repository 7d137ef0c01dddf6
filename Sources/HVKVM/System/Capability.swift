import CKVM

/// A KVM capability number, as passed to KVM_CHECK_EXTENSION and KVM_ENABLE_CAP.
public struct Capability: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The KVM_CAP_* number.
    public let rawValue: Int32
    /// Its name, for the capabilities HVKit knows.
    public let name: String?

    /// Capability number `rawValue`, unnamed.
    public init(rawValue: Int32) {
        self.rawValue = rawValue
        self.name = nil
    }

    init(_ value: Int32, _ name: String) {
        self.rawValue = value
        self.name = name
    }

    /// The capability's name, or its number.
    public var description: String { name ?? "capability \(rawValue)" }

    /// Capabilities are equal when their numbers are.
    public static func == (lhs: Capability, rhs: Capability) -> Bool { lhs.rawValue == rhs.rawValue }
    /// Hashes the number.
    public func hash(into hasher: inout Hasher) { hasher.combine(rawValue) }

    /// KVM_CAP_IRQCHIP: the in-kernel PIC, I/O APIC and local APICs.
    public static let irqchip = Capability(KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP")
    /// KVM_CAP_USER_MEMORY: memory slots backed by the VMM's mappings.
    public static let userMemory = Capability(KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY")
    /// KVM_CAP_SET_TSS_ADDR.
    public static let setTSSAddress = Capability(KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR")
    /// KVM_CAP_SET_IDENTITY_MAP_ADDR.
    public static let setIdentityMapAddress = Capability(KVM_CAP_SET_IDENTITY_MAP_ADDR, "KVM_CAP_SET_IDENTITY_MAP_ADDR")
    /// KVM_CAP_PIT2: the in-kernel PIT.
    public static let pit2 = Capability(KVM_CAP_PIT2, "KVM_CAP_PIT2")
    /// KVM_CAP_IRQFD: interrupts injected through eventfds.
    public static let irqfd = Capability(KVM_CAP_IRQFD, "KVM_CAP_IRQFD")
    /// KVM_CAP_IOEVENTFD: guest writes that signal eventfds without an exit.
    public static let ioeventfd = Capability(KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD")
    /// KVM_CAP_SYNC_REGS: registers exchanged through kvm_run.
    public static let syncRegisters = Capability(KVM_CAP_SYNC_REGS, "KVM_CAP_SYNC_REGS")
    /// KVM_CAP_IMMEDIATE_EXIT: kicking a vCPU without a race.
    public static let immediateExit = Capability(KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT")
    /// KVM_CAP_READONLY_MEM: read-only memory slots.
    public static let readOnlyMemory = Capability(KVM_CAP_READONLY_MEM, "KVM_CAP_READONLY_MEM")
    /// KVM_CAP_MAX_VCPUS.
    public static let maxVCPUs = Capability(KVM_CAP_MAX_VCPUS, "KVM_CAP_MAX_VCPUS")
    /// KVM_CAP_NR_MEMSLOTS.
    public static let numberOfMemorySlots = Capability(KVM_CAP_NR_MEMSLOTS, "KVM_CAP_NR_MEMSLOTS")
    /// KVM_CAP_EXIT_HYPERCALL: `vmcall`s forwarded to the VMM.
    public static let exitHypercall = Capability(KVM_CAP_EXIT_HYPERCALL, "KVM_CAP_EXIT_HYPERCALL")
    /// KVM_CAP_DEBUGREGS.
    public static let debugRegisters = Capability(KVM_CAP_DEBUGREGS, "KVM_CAP_DEBUGREGS")
    /// KVM_CAP_VCPU_EVENTS.
    public static let vcpuEvents = Capability(KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS")
    /// KVM_CAP_EXT_CPUID.
    public static let extendedCPUID = Capability(KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID")
    /// KVM_CAP_GET_MSR_FEATURES.
    public static let getMSRFeatures = Capability(KVM_CAP_GET_MSR_FEATURES, "KVM_CAP_GET_MSR_FEATURES")
    /// KVM_CAP_DIRTY_LOG_RING.
    public static let dirtyLogRing = Capability(KVM_CAP_DIRTY_LOG_RING, "KVM_CAP_DIRTY_LOG_RING")
    /// KVM_CAP_HALT_POLL: the per-VM halt-polling limit.
    public static let haltPoll = Capability(KVM_CAP_HALT_POLL, "KVM_CAP_HALT_POLL")
    /// KVM_CAP_IRQ_ROUTING.
    public static let irqRouting = Capability(KVM_CAP_IRQ_ROUTING, "KVM_CAP_IRQ_ROUTING")
    /// KVM_CAP_ADJUST_CLOCK.
    public static let adjustClock = Capability(KVM_CAP_ADJUST_CLOCK, "KVM_CAP_ADJUST_CLOCK")
    /// KVM_CAP_XSAVE: KVM_GET_XSAVE and KVM_SET_XSAVE.
    public static let xsave = Capability(KVM_CAP_XSAVE, "KVM_CAP_XSAVE")
    /// KVM_CAP_XSAVE2: the size of the XSAVE area KVM_GET_XSAVE2 fills (on a VM).
    public static let xsave2 = Capability(KVM_CAP_XSAVE2, "KVM_CAP_XSAVE2")
    /// KVM_CAP_XCRS: KVM_GET_XCRS and KVM_SET_XCRS.
    public static let extendedControlRegisters = Capability(KVM_CAP_XCRS, "KVM_CAP_XCRS")
}

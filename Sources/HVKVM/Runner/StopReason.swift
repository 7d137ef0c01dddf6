import HVCore

/// Why a VM (or one of its vCPUs) stopped running.
public enum StopReason: Sendable, Hashable, CustomStringConvertible {
    /// The vCPU executed `hlt` with no in-kernel irqchip to wait on.
    case halted(vcpu: UInt32)
    /// The guest shut down: on x86 this is a triple fault.
    case shutdown(vcpu: UInt32)
    /// The guest asked for a reset, a power-off, or reported a crash.
    case systemEvent(SystemEvent, vcpu: UInt32)
    /// KVM failed to emulate an instruction or to deliver an event.
    case internalError(vcpu: UInt32, suberror: UInt32, data: [UInt64])
    /// The hardware refused to enter the guest.
    case failEntry(vcpu: UInt32, reason: UInt64)
    /// An exit nobody handles (for example an unknown reason, or a hypercall without a
    /// handler); `exit` describes it.
    case unhandledExit(vcpu: UInt32, exit: String)
    /// A KVM call failed on this vCPU (including during setup).
    case failed(vcpu: UInt32, error: KVMError)
    /// The embedding program (or an exit handler) asked the VM to stop.
    case stopRequested
    /// A reset was asked for through ``VCPURunner/requestReset()`` (a reset device) and the
    /// ``ResetPolicy`` said stop, or the restart limit was reached.
    case resetRequested
    /// The guest asked to stop through a trap (a hypercall): exit with a status, or abort
    /// with a message.
    case guestRequested(GuestStopRequest, vcpu: UInt32)

    /// The reason in words, naming the vCPU.
    public var description: String {
        switch self {
        case let .halted(vcpu): return "vCPU \(vcpu) halted"
        case let .shutdown(vcpu): return "vCPU \(vcpu) shut down (triple fault)"
        case let .systemEvent(event, vcpu): return "vCPU \(vcpu) raised system event \(event)"
        case let .internalError(vcpu, suberror, data):
            return "vCPU \(vcpu): \(InternalErrorReport(suberror: suberror, data: data))"
        case let .failEntry(vcpu, reason): return "vCPU \(vcpu): entry failed, hardware reason 0x\(String(reason, radix: 16))"
        case let .unhandledExit(vcpu, exit): return "vCPU \(vcpu): unhandled exit \(exit)"
        case let .failed(vcpu, error): return "vCPU \(vcpu): \(error)"
        case .stopRequested: return "stop requested"
        case .resetRequested: return "reset requested"
        case let .guestRequested(request, vcpu): return "vCPU \(vcpu): guest asked to \(request)"
        }
    }

    /// Whether this is the guest resetting itself: a triple fault, a reset system event, or
    /// a reset request. These go to the runner's ``ResetPolicy``.
    public var isGuestReset: Bool {
        switch self {
        case .shutdown, .systemEvent(.reset, _), .resetRequested: return true
        default: return false
        }
    }
}

/// Where a guest trapped into a ``RegisterTrap``.
public enum TrapSite: Hashable, Sendable, CustomStringConvertible {
    /// A write (`out`) to this I/O port.
    case port(UInt16)
    /// A write to this guest-physical MMIO address.
    case mmio(GuestAddress)
    /// `vmcall`/`vmmcall` that KVM forwarded to userspace.
    case vmcall

    /// Where the trap is, in words.
    public var description: String {
        switch self {
        case let .port(port): return "port 0x" + String(port, radix: 16)
        case let .mmio(address): return "MMIO \(address)"
        case .vmcall: return "vmcall"
        }
    }
}

/// A stop the guest asked for through a trap.
public enum GuestStopRequest: Hashable, Sendable, CustomStringConvertible {
    /// The guest finished with this status.
    case exit(status: Int32)
    /// The guest gave up; `message` is what it said (already copied out of guest memory).
    case abort(message: String)

    /// What the guest asked for, in words.
    public var description: String {
        switch self {
        case let .exit(status): return "exit with status \(status)"
        case let .abort(message): return "abort: \(message)"
        }
    }

    /// The status a VMM process should exit with: the guest's own when it fits a process exit
    /// status (0 to 255); ``failedExitCode`` for an abort, and for a status that does not fit,
    /// which would otherwise be cut to its low byte (256 would read as success).
    public var processExitCode: Int32 {
        switch self {
        case let .exit(status): return (0...255).contains(status) ? status : Self.failedExitCode
        case .abort: return Self.failedExitCode
        }
    }

    /// The exit status for a guest that aborted or exited with a status out of range.
    public static let failedExitCode: Int32 = 255
}

/// What the vCPU does after a trap.
public enum TrapOutcome: Hashable, Sendable {
    /// Run the guest again (with whatever registers the handler wrote).
    case resume
    /// Stop the VM.
    case stop(GuestStopRequest)
    /// Nothing to answer yet: take the vCPU out of the way until the wait ends, then call
    /// the trap again (see ``TrapWait``).
    case wait(TrapWait)
}

/// A handler for traps that need the trapping vCPU's registers: a hypercall doorbell.
///
/// Unlike a ``BusDevice``, which sees only the value written, a trap reads its arguments from
/// and writes its result to the vCPU's registers. A backend (HVKVM's `VCPURunner`) calls it on
/// the vCPU's thread, with the registers read once at the exit (through KVM's sync-register
/// area, so no extra system call) and writes back what the handler changed.
public protocol RegisterTrap: AnyObject, Sendable {
    /// Handles one trap at `site` from vCPU `vcpu`. `value` is what the guest wrote to the
    /// doorbell (0 for `vmcall`). Should not block: a call that must wait returns
    /// ``TrapOutcome/wait(_:)``. Must return promptly once ``vmStopping()`` was called.
    func trap(at site: TrapSite, value: UInt64, vcpu: UInt32, registers: inout some GuestRegisterAccess) -> TrapOutcome

    /// The VM is stopping: end any wait inside ``trap(at:value:vcpu:registers:)`` now, and
    /// return at once from later calls. Called from any thread, possibly more than once.
    func vmStopping()
}

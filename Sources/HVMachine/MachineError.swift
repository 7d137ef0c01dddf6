import HVCore

/// What went wrong composing, booting, running or stopping a ``Machine``: the step, the device
/// it concerned (if any), and the underlying error.
///
/// ```
/// adding virtio-blk "disk0": wiring queue notifications: KVM_IOEVENTFD failed: ...
/// ```
public struct MachineError: Error, Sendable, CustomStringConvertible {
    /// The step of a machine's life that failed.
    public enum Step: String, Sendable, Hashable {
        /// Opening /dev/kvm or creating the VM.
        case createVM = "creating the VM"
        /// Mapping guest RAM and registering it with KVM.
        case mapMemory = "mapping guest RAM"
        /// Creating the in-kernel interrupt controllers and the PIT.
        case createInterruptControllers = "creating the interrupt controllers"
        /// Starting the event loop thread.
        case startEventLoop = "starting the event loop"
        /// A device could not be added: no room, a bad argument, or added too late.
        case addDevice = "adding a device"
        /// Opening a disk image or its I/O backend.
        case openDisk = "opening a disk"
        /// Opening a network backend (a tap).
        case openNetwork = "opening a network backend"
        /// Creating or registering a device's interrupt (irqfd).
        case wireInterrupt = "wiring the interrupt"
        /// Creating or registering a device's queue notifications (ioeventfd).
        case wireNotifications = "wiring queue notifications"
        /// Reading, parsing or extracting the kernel or guest image.
        case readImage = "reading the guest image"
        /// Writing the kernel, initrd, command line and boot tables into guest RAM.
        case loadGuest = "loading the guest"
        /// Preparing or starting the vCPUs.
        case start = "starting the vCPUs"
        /// Finishing in-flight requests and flushing disks after the vCPUs stopped.
        case shutdown = "shutting down"
        /// Installing a thread's seccomp filter (``MachineConfiguration/systemCallFilter``).
        case restrictSystemCalls = "restricting system calls"
        /// Saving the machine's state and memory (``Machine/snapshot(to:kind:leavePaused:)``).
        case snapshot = "taking a snapshot"
        /// Reading a snapshot or putting its state back (``Machine/init(restoring:_:copyingMemory:)``, ``Machine/restore(hypercalls:)``).
        case restore = "restoring a snapshot"
    }

    /// The step that failed.
    public let step: Step
    /// The device concerned, as the machine names it ("virtio-blk disk0", "16550 serial").
    public let device: String?
    /// Why, in words (the underlying error's description, or the machine's own reason).
    public let reason: String
    /// The underlying error, when there is one.
    public let underlying: (any Error)?

    /// An error for `step`, concerning `device`, caused by `underlying`.
    public init(_ step: Step, device: String? = nil, _ underlying: any Error) {
        self.step = step
        self.device = device
        self.reason = "\(underlying)"
        self.underlying = underlying
    }

    /// An error for `step`, concerning `device`, with a reason of the machine's own.
    public init(_ step: Step, device: String? = nil, reason: String) {
        self.step = step
        self.device = device
        self.reason = reason
        self.underlying = nil
    }

    /// The step, the device and the reason, in one line.
    public var description: String {
        if let device { return "\(step.rawValue) (\(device)): \(reason)" }
        return "\(step.rawValue): \(reason)"
    }
}

/// Runs `body`, turning any error it throws into a ``MachineError`` for `step`.
func during<T>(_ step: MachineError.Step, device: String? = nil, _ body: () throws -> T) throws(MachineError) -> T {
    do {
        return try body()
    } catch let error as MachineError {
        throw error
    } catch {
        throw MachineError(step, device: device, error)
    }
}

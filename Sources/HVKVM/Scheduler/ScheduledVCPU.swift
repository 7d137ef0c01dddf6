import HVCore
import SystemPackage

/// One vCPU under a ``VCPUScheduler``: the vCPU itself and where it is in its life.
final class ScheduledVCPU: @unchecked Sendable {
    enum State: Equatable {
        /// In the run queue, or about to be put there.
        case ready
        /// On worker `worker`, inside a slice.
        case running(worker: Int)
        /// Out of the queue while its VM is paused.
        case parked
        /// Halted in the guest, or waiting in a trap (`pendingTrap`); back in the queue at
        /// `deadline` (HostClock nanoseconds), when its VM is woken, or when a descriptor of
        /// the trap's wait becomes readable.
        case halted(deadline: UInt64?)
        /// Stopped for good.
        case done
    }

    // SAFETY: `vcpu` is used by one thread at a time: the worker whose slice holds it
    // (state .running), or a withPausedVCPU caller while it is parked; the scheduler's lock
    // hands it from one to the next. Every var is read and written with that lock held.
    // Hence @unchecked.
    let vcpu: VCPU
    /// Unowned, since the VM holds its vCPUs. The scheduler keeps the VM alive until its
    /// last vCPU is done; code that goes on after that takes a strong reference first.
    unowned let vm: ScheduledVM
    let counters = VCPUCounters()
    var state: State = .ready
    var lastWorker: Int?
    /// When it last stopped running (for the parked-time counter), HostClock nanoseconds.
    var parkedSince: UInt64 = 0
    /// A wake came while the vCPU was not asleep (running towards a halt, say): its next
    /// halt does not sleep, so the wake is not lost. At worst one halt returns early, which
    /// a guest's idle loop takes as any spurious wake-up.
    var wakePending = false
    /// A trap call that waits, made again at the start of the vCPU's next slice.
    var pendingTrap: ExitDispatch.PendingTrap?
    /// The trap wait's descriptors (duplicates, so that vCPUs waiting on the same source each
    /// have their own) on the scheduler's event loop.
    var waitRegistrations: [(registration: EventLoop.Registration, descriptor: FileDescriptor)] = []

    init(vcpu: VCPU, vm: ScheduledVM) {
        self.vcpu = vcpu
        self.vm = vm
    }

    var id: UInt32 { vcpu.id }
}

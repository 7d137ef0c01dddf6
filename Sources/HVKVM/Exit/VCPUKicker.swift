import CKVM
import Glibc
import HVCore

/// Makes a vCPU leave the guest, from any thread: sets kvm_run's `immediate_exit` (which
/// catches a vCPU that is about to enter) and sends the kick signal to the vCPU's thread
/// (which interrupts one already inside KVM_RUN). The vCPU's run returns
/// ``VMExit/interrupted``; whoever kicked should have set whatever flag says why first.
///
/// The signal's handler does nothing and does not restart system calls, so on a vCPU thread
/// other blocking calls may also return EINTR after a kick; HVKit's own calls retry.
public final class VCPUKicker: Sendable {
    private let run: KVMRunMapping
    private let thread = Locked<pthread_t?>(nil)

    /// The signal used for kicks (SIGRTMIN). Its handler is installed once per process, the
    /// first time a kicker is made; the handler does nothing and does not restart syscalls.
    public static let signal: Int32 = ckvm_kick_signal()
    private static let handlerInstalled: Bool = ckvm_install_kick_handler(ckvm_kick_signal()) == 0

    init(run: KVMRunMapping) {
        self.run = run
        _ = Self.handlerInstalled
    }

    /// Records the thread that runs the vCPU, which must be the calling thread, and makes
    /// sure the kick signal is not blocked on it.
    func bind(to thread: pthread_t) {
        _ = ckvm_unblock_kick_signal()
        self.thread.withLock { $0 = thread }
    }

    /// Makes the kick signal deliverable on the calling thread, which will run vCPUs that
    /// other threads created (a scheduler's worker).
    static func prepareCurrentThread() {
        _ = handlerInstalled
        _ = ckvm_unblock_kick_signal()
    }

    /// Records the thread that runs the vCPU now (the calling thread, already prepared with
    /// ``prepareCurrentThread()``): a scheduler's worker at the start of a slice.
    func move(to thread: pthread_t) {
        self.thread.withLock { $0 = thread }
    }

    /// Forgets the thread; later kicks only set `immediate_exit`. Called before the thread
    /// ends so that no signal is ever sent to a thread that no longer exists.
    func unbind() {
        thread.withLock { $0 = nil }
    }

    /// Kicks the vCPU out of the guest, or keeps it from entering on its next run.
    public func kick() {
        unsafe ckvm_set_immediate_exit(run.pointer, 1)
        thread.withLock { thread in
            if let thread { _ = pthread_kill(thread, Self.signal) }
        }
    }
}

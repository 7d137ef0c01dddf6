import Glibc
import HVCore
import Synchronization

/// Turns signals into actions: SIGINT and SIGTERM into a clean stop, and the one
/// `--snapshot-on-signal` names into a snapshot. The signals are blocked first, before any
/// other thread exists, so every thread made later (vCPUs, I/O) inherits the block and never
/// takes them; one thread then waits for them with sigwait, outside any signal handler, where
/// it may call anything.
final class SignalWatcher: Sendable {
    private let set: sigset_t
    private let action = Locked<(@Sendable (Int32) -> Bool)?>(nil)
    private let firedFlag = Atomic<Bool>(false)

    /// Whether a signal stopped the machine.
    var fired: Bool { firedFlag.load(ordering: .acquiring) }

    /// Blocks `signals` in the calling thread; call before making any thread.
    init(blocking signals: [Int32]) {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in signals { sigaddset(&set, signal) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        self.set = set
    }

    /// Starts the waiting thread; `action` runs on it for every signal that comes, and says
    /// whether that signal stopped the machine.
    func watch(_ action: @escaping @Sendable (Int32) -> Bool) {
        self.action.withLock { $0 = action }
        // Never joined: it waits for the process's whole life.
        _ = try? HostThread(name: "minivmm-signals") { [self] in
            var set = self.set
            var signal: Int32 = 0
            while sigwait(&set, &signal) == 0 {
                let action = self.action.withLock { $0 }
                if action?(signal) ?? true { firedFlag.store(true, ordering: .releasing) }
            }
        }
    }
}

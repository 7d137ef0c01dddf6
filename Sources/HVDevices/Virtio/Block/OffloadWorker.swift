import HVCore
import SystemPackage

/// One thread, started on first use, that runs a block backend's long operations in order:
/// discard and write-zeroes, which on a file system without a zero-range fallocate write every
/// zero themselves (32 MiB at most per request). Run on the thread that notified the device,
/// they would hold a vCPU or the event loop that other devices and VMs share.
final class OffloadWorker: Sendable {
    private struct State {
        var jobs: [@Sendable () -> Void] = []
        var thread: HostThread?
        var stopping = false
    }

    private let name: String
    private let state = Locked(State())
    /// A blocking counter: the worker sleeps in read until a job or the stop arrives. Made
    /// here, on the thread that sets the backend up: the first job may come from a thread
    /// whose seccomp filter allows no new descriptors (starting a thread it does allow).
    private let wake: EventFD?

    init(name: String) {
        self.name = name
        wake = try? EventFD()
    }

    /// Queues `job`. Starts the thread if it is not running; if it cannot be started, runs
    /// `job` here rather than lose it.
    func run(_ job: @escaping @Sendable () -> Void) {
        guard let wake else {
            job()
            return
        }
        let queued = state.withLock { state -> Bool in
            guard !state.stopping else { return false }
            if state.thread == nil {
                // Started under the lock, so two first jobs cannot start two threads.
                guard let thread = try? HostThread(name: name, { [self] in serve(wake) }) else { return false }
                state.thread = thread
            }
            state.jobs.append(job)
            return true
        }
        guard queued else {
            job()
            return
        }
        try? wake.signal()
    }

    /// Runs the jobs already queued, then ends the thread and waits for it; from a job (the
    /// owner's last reference went away there), lets the thread end by itself instead.
    func shutdown() {
        let thread = state.withLock { state in
            state.stopping = true
            return state.thread.take()
        }
        guard let thread else { return }
        try? wake?.signal()
        if thread.isCurrent {
            thread.detach()
        } else {
            thread.join()
        }
    }

    private func serve(_ wake: EventFD) {
        while true {
            _ = try? wake.consume()
            let (jobs, stopping) = state.withLock { state in
                defer { state.jobs.removeAll() }
                return (state.jobs, state.stopping)
            }
            for job in jobs { job() }
            if stopping, state.withLock({ $0.jobs.isEmpty }) { return }
        }
    }
}

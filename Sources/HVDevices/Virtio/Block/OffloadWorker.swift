import HVCore
import Synchronization
import SystemPackage

/// One thread, started on first use, that runs a block backend's long operations in order:
/// discard and write-zeroes, which on a file system without a zero-range fallocate write every
/// zero themselves (32 MiB at most per request). Run on the thread that notified the device,
/// they would hold a vCPU or the event loop that other devices and VMs share.
final class OffloadWorker: Sendable {
    private struct State {
        var jobs: [@Sendable () -> Void] = []
        var thread: HostThread?
        /// A blocking counter: the worker sleeps in read until a job or the stop arrives.
        var wake: EventFD?
        var stopping = false
    }

    private let name: String
    private let state = Mutex(State())

    init(name: String) {
        self.name = name
    }

    /// Queues `job`. Starts the thread if it is not running; if it cannot be started, runs
    /// `job` here rather than lose it.
    func run(_ job: @escaping @Sendable () -> Void) {
        let wake = state.withLock { state -> EventFD? in
            guard !state.stopping else { return nil }
            if state.thread == nil {
                // Started under the lock, so two first jobs cannot start two threads.
                guard let wake = try? EventFD(), let thread = try? HostThread(name: name, { [self] in serve(wake) }) else { return nil }
                state.wake = wake
                state.thread = thread
            }
            state.jobs.append(job)
            return state.wake
        }
        guard let wake else {
            job()
            return
        }
        try? wake.signal()
    }

    /// Runs the jobs already queued, then ends the thread and waits for it; from a job (the
    /// owner's last reference went away there), lets the thread end by itself instead.
    func shutdown() {
        let (thread, wake) = state.withLock { state in
            state.stopping = true
            return (state.thread.take(), state.wake)
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

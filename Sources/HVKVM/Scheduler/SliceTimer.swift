import Glibc
import HVCore
import Synchronization

/// What a worker is running now, as the slice timer sees it.
final class WorkerSlot: Sendable {
    /// When the current slice ends (HostClock nanoseconds); 0 while the worker runs no vCPU
    /// or after the timer has kicked it.
    let deadline = Atomic<UInt64>(0)
    /// The kicker of the vCPU on the worker. Kicks happen with this lock held, and the
    /// worker clears it with the lock held, so a kick never reaches the next vCPU the worker
    /// runs.
    let current = Locked<VCPUKicker?>(nil)
}

/// Ends slices on time: a guest that never exits (a tight loop) is kicked out of KVM_RUN
/// when its slice is over. One thread serves every worker; it sleeps until the nearest
/// deadline, and without deadlines until a slice begins.
final class SliceTimer: @unchecked Sendable {
    // SAFETY: `stopping` and `idle` are read and written only with `lock` held. Hence
    // @unchecked.
    private let lock = ConditionLock()
    private var stopping = false
    private var idle = false
    private let slots: [WorkerSlot]
    private let longestWait: UInt64
    let kicks = Atomic<UInt64>(0)

    /// - Parameter longestWait: the timer never sleeps longer than this while slices run
    ///   (the scheduler's shortest slice), so a slice that begins while it sleeps is seen in
    ///   time.
    init(slots: [WorkerSlot], longestWait: UInt64) {
        self.slots = slots
        self.longestWait = longestWait
    }

    /// A worker began a slice: wake the timer if it sleeps without a deadline.
    func sliceBegan() {
        lock.withLock {
            if idle { lock.broadcast() }
        }
    }

    func stop() {
        lock.withLock {
            stopping = true
            lock.broadcast()
        }
    }

    func run() {
        lock.withLock {
            while !stopping {
                let now = HostClock.monotonicNanoseconds()
                var nearest = UInt64.max
                for slot in slots {
                    let deadline = slot.deadline.load(ordering: .acquiring)
                    guard deadline != 0 else { continue }
                    if deadline <= now {
                        // Kicked once: the worker ends the slice at its next exit.
                        slot.deadline.store(0, ordering: .releasing)
                        slot.current.withLock { $0?.kick() }
                        kicks.add(1, ordering: .relaxed)
                    } else {
                        nearest = min(nearest, deadline)
                    }
                }
                if nearest == .max {
                    // Nothing running: sleep until a slice begins. A worker stores its deadline
                    // before it calls sliceBegan(), which needs this lock: either the scan
                    // above saw the deadline, or the call comes after this wait began.
                    idle = true
                    lock.wait()
                    idle = false
                } else {
                    lock.wait(untilNanoseconds: min(nearest, now &+ longestWait))
                }
            }
        }
    }
}

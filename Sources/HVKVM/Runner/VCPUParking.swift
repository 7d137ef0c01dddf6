import HVCore
import Synchronization

/// Where a runner's vCPU threads wait while the VM is paused, and how other threads reach a
/// parked vCPU: a task queued for it runs on its own thread (KVM wants a vCPU's ioctls there).
///
/// Two parties may hold the VM paused at once, the embedder (``VCPURunner/pause()``) and a
/// guest restart in progress; the vCPUs run again only when neither does.
///
/// All state is guarded by one ``ConditionLock``. `pauseFlag` is written only with the lock
/// held too, but is atomic so the run loop can check it without the lock.
final class VCPUParking: @unchecked Sendable {
    enum Holder: Hashable { case embedder, restart }

    // SAFETY: every var below is read and written only with `lock` held. Hence @unchecked.
    private let lock = ConditionLock()
    let pauseFlag = Atomic<Bool>(false)
    private var holders: Set<Holder> = []
    private var pauseRequested: Bool { pauseFlag.load(ordering: .acquiring) }
    private var stopping = false
    private var live: Set<UInt32> = []
    private var parked: Set<UInt32> = []
    private var tasks: [UInt32: [(VCPU) -> Void]] = [:]

    /// vCPU `id`'s thread is about to run the guest.
    func enter(_ id: UInt32) {
        lock.withLock { _ = live.insert(id) }
    }

    /// vCPU `id`'s thread has left its run loop for good.
    func leave(_ id: UInt32) {
        lock.withLock {
            live.remove(id)
            lock.broadcast()
        }
    }

    /// Called by vCPU `vcpu`'s thread when it sees the pause flag: waits, running any tasks
    /// queued for it, until the VM resumes or stops.
    func park(_ vcpu: VCPU, counters: VCPUCounters) {
        let start = HostClock.monotonicNanoseconds()
        counters.parks.add(1, ordering: .relaxed)
        lock.withLock {
            parked.insert(vcpu.id)
            lock.broadcast()
            while true {
                if let queued = tasks.removeValue(forKey: vcpu.id) {
                    for task in queued { task(vcpu) }
                    lock.broadcast()
                }
                if !pauseRequested || stopping { break }
                lock.wait()
            }
            parked.remove(vcpu.id)
        }
        counters.parkedNanoseconds.add(HostClock.monotonicNanoseconds() &- start, ordering: .relaxed)
    }

    func requestPause(by holder: Holder) {
        lock.withLock {
            holders.insert(holder)
            pauseFlag.store(true, ordering: .releasing)
        }
    }

    /// Waits until every live vCPU is parked; false if the VM stopped or resumed meanwhile.
    func waitUntilParked() -> Bool {
        lock.withLock {
            while pauseRequested, !stopping, !live.isSubset(of: parked) { lock.wait() }
            return pauseRequested && !stopping
        }
    }

    func resume(by holder: Holder) {
        lock.withLock {
            holders.remove(holder)
            pauseFlag.store(!holders.isEmpty, ordering: .releasing)
            lock.broadcast()
        }
    }

    /// The VM is stopping: parked vCPUs leave, and nobody waits for them to park.
    func stop() {
        lock.withLock {
            stopping = true
            lock.broadcast()
        }
    }

    /// Runs `body` on parked vCPU `id`'s thread and waits for it. False when the VM is not
    /// paused or that vCPU is not running.
    func perform(on id: UInt32, _ body: @escaping (VCPU) -> Void) -> Bool {
        final class Done { var value = false }
        let done = Done()
        return lock.withLock {
            guard pauseRequested, !stopping, live.contains(id) else { return false }
            tasks[id, default: []].append { vcpu in
                body(vcpu)
                done.value = true
            }
            lock.broadcast()
            while !done.value, live.contains(id), !stopping { lock.wait() }
            return done.value
        }
    }
}

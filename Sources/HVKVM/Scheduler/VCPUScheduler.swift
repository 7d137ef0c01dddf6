import Glibc
import HVCore
import Logging
import Synchronization
import SystemPackage

/// Runs the vCPUs of many VMs on a few host threads (M:N), for hosts that pack many small
/// VMs: a VM costs no thread of its own, and a vCPU that waits costs no CPU.
///
/// - Each worker thread takes the vCPU at the front of one run queue and gives it a turn of
///   as many slices (``timeSlice`` each) as its VM's weight: KVM_RUN and exit handling, as
///   ``VCPURunner`` does, until the turn is over, the vCPU stops, halts, or its VM is paused.
///   Then the vCPU goes to the back of the queue. Round robin with weights: every ready vCPU
///   gets a turn before any gets a second.
/// - A slice is enforced by a timer thread that kicks the vCPU out of the guest
///   (`immediate_exit` plus a signal to the worker) when it is over, so a guest that never
///   exits cannot keep its worker.
/// - A halted vCPU (``ScheduledVM/HaltBehavior/sleep(timeout:)``) and a paused VM's vCPUs
///   leave the queue and cost nothing until woken, resumed or stopped.
/// - vCPUs move freely between workers. KVM lets any one thread at a time run a vCPU; on
///   older host kernels the first KVM_RUN on a new thread waited for an RCU grace period
///   (milliseconds). On this host (6.18) a run on another thread than last time costs 1.5 to
///   2.5 µs more than one on the same thread (hv-bench `vcpu_migration`), less than waking
///   an idle worker would, and a slice is milliseconds. So the queue is shared and a free
///   worker takes whatever is next, rather than keeping vCPUs on a home worker.
///
/// Call ``shutdown()`` when done: it stops every VM and joins the threads.
public final class VCPUScheduler: @unchecked Sendable {
    /// The base slice a vCPU runs before others get a turn.
    public let timeSlice: Duration
    /// How many worker threads run vCPUs.
    public let workerCount: Int
    private let sliceNanoseconds: UInt64
    private let logger: Logger

    /// Guards every scheduling decision: the run queue, each vCPU's state, each VM's flags.
    let lock = ConditionLock()
    // SAFETY: every var below is read and written with `lock` held. Hence @unchecked.
    private var queue = RunQueue<ScheduledVCPU>()
    private var halted: [ScheduledVCPU] = []
    private var vms: [ObjectIdentifier: ScheduledVM] = [:]
    private var shuttingDown = false
    private var threads: [HostThread] = []
    /// Watches the descriptors of trap waits (hypercall polls); made at the first wait.
    private var trapWaits: EventLoop?

    private let slots: [WorkerSlot]
    private let timer: SliceTimer

    /// Starts `workers` worker threads (named `hv-worker-N`) and the slice timer.
    /// - Parameters:
    ///   - workers: how many worker threads run vCPUs.
    ///   - timeSlice: the base slice, at least 100 µs.
    ///   - placement: which host CPUs each worker may run on (worker N as vCPU N would).
    ///   - logger: where the scheduler logs.
    public init(workers: Int, timeSlice: Duration = .milliseconds(4), placement: VCPUPlacement = .unpinned,
                logger: Logger? = nil) throws(KVMError) {
        guard workers > 0 else { throw .invalidArgument("worker count \(workers)") }
        guard timeSlice >= .zero, timeSlice < .seconds(60) else { throw .invalidArgument("time slice \(timeSlice)") }
        let nanoseconds = timeSlice.clampedNanoseconds
        guard nanoseconds >= 100_000 else { throw .invalidArgument("time slice \(timeSlice) is under 100 µs") }
        self.timeSlice = timeSlice
        self.workerCount = workers
        sliceNanoseconds = nanoseconds
        self.logger = logger ?? Logger(label: "hvkit.scheduler")
        slots = (0..<workers).map { _ in WorkerSlot() }
        timer = SliceTimer(slots: slots, longestWait: nanoseconds)

        var started: [HostThread] = []
        do throws(Errno) {
            started.append(try HostThread(name: "hv-slice-timer") { [timer] in timer.run() })
            for index in 0..<workers {
                let cpus = placement.cpus(for: UInt32(index))
                started.append(try HostThread(name: "hv-worker-\(index)") { [self] in
                    workerLoop(index: index, cpus: cpus)
                })
            }
        } catch {
            lock.withLock { shuttingDown = true; lock.broadcast() }
            timer.stop()
            for thread in started { thread.join() }
            throw .systemCall("pthread_create", error)
        }
        lock.withLock { threads = started }
    }

    // MARK: Adding VMs

    /// Creates `vcpuCount` vCPUs for `vm` on the calling thread, runs `setup` on each, and
    /// queues them. If a setup fails nothing is queued and the error is thrown.
    /// - Parameters:
    ///   - vm: the VM whose vCPUs to create and run.
    ///   - pio: the port-I/O bus its exits go to.
    ///   - mmio: the MMIO bus its exits go to.
    ///   - traps: register traps (hypercall doorbells), checked before the buses.
    ///   - vcpuCount: how many vCPUs.
    ///   - weight: 1 to 64; a vCPU of this VM runs `weight` base slices per turn.
    ///   - halts: what `hlt` does without an in-kernel irqchip.
    ///   - exitHandler: sees every exit first.
    ///   - setup: prepares each vCPU before it is queued.
    public func add(
        _ vm: VirtualMachine, pio: Bus, mmio: Bus, traps: [TrapSite: any RegisterTrap] = [:],
        vcpuCount: Int = 1, weight: Int = 1, halts: ScheduledVM.HaltBehavior = .stop,
        exitHandler: VCPURunner.ExitHandler? = nil, setup: VCPURunner.Setup
    ) throws(KVMError) -> ScheduledVM {
        guard vcpuCount > 0 else { throw .invalidArgument("vCPU count \(vcpuCount)") }
        guard (1...64).contains(weight) else { throw .invalidArgument("weight \(weight) (1 to 64)") }
        let dispatch = ExitDispatch(pio: pio, mmio: mmio, traps: traps, exitHandler: exitHandler, logger: logger)
        let scheduled = ScheduledVM(vm: vm, weight: weight, halts: halts, dispatch: dispatch, scheduler: self)
        var vcpus: [ScheduledVCPU] = []
        for index in 0..<vcpuCount {
            let vcpu = try vm.createVCPU(id: UInt32(index))
            try setup(vcpu)
            try dispatch.prepare(vcpu)
            // Until a worker runs it, a kick only sets immediate_exit.
            vcpu.kicker.unbind()
            vcpus.append(ScheduledVCPU(vcpu: vcpu, vm: scheduled))
        }
        let accepted = lock.withLock {
            guard !shuttingDown else { return false }
            scheduled.vcpus = vcpus
            vms[ObjectIdentifier(scheduled)] = scheduled
            for vcpu in vcpus { queue.append(vcpu) }
            lock.broadcast()
            return true
        }
        guard accepted else { throw .invalidArgument("the scheduler is shut down") }
        return scheduled
    }

    /// VMs added and not yet stopped.
    public var activeVMCount: Int { lock.withLock { vms.count } }

    /// Stops every VM, waits for them, and ends the worker and timer threads. The scheduler
    /// takes no VM afterwards.
    public func shutdown() {
        let all = lock.withLock {
            shuttingDown = true
            return Array(vms.values)
        }
        for vm in all { vm.stop() }
        let toJoin = lock.withLock {
            lock.broadcast()
            defer { threads = [] }
            return threads
        }
        timer.stop()
        for thread in toJoin { thread.join() }
        lock.withLock { trapWaits.take() }?.shutdown()
    }

    /// Kicks the timer made to end slices, for statistics.
    public var sliceKicks: UInt64 { timer.kicks.load(ordering: .relaxed) }

    // MARK: Workers

    private enum SliceEnd {
        case expired
        case paused
        case halted
        case waiting(TrapWait, ExitDispatch.PendingTrap)
        case stopped(StopReason)
    }

    private func workerLoop(index: Int, cpus: [Int]?) {
        if let cpus {
            do throws(Errno) { try HostThread.pinCurrentThread(to: cpus) } catch {
                logger.error("worker not pinned", metadata: ["worker": "\(index)", "cpus": "\(cpus)", "error": "\(error)"])
            }
        }
        VCPUKicker.prepareCurrentThread()
        let thread = pthread_self()
        let slot = slots[index]
        while let task = next(for: index) {
            // A turn is `weight` slices back to back; each is timed and counted on its own.
            var end = SliceEnd.expired
            for _ in 0..<task.vm.weight {
                end = runSlice(task, slot: slot, thread: thread)
                guard case .expired = end else { break }
            }
            settle(task, after: end)
        }
    }

    /// Waits for the next ready vCPU and marks it running on worker `index`; nil at shutdown
    /// once nothing is left to run.
    private func next(for index: Int) -> ScheduledVCPU? {
        lock.withLock {
            while true {
                wakeSleepers(now: HostClock.monotonicNanoseconds())
                while let task = queue.popFirst() {
                    guard task.state == .ready else { continue }
                    if task.vm.stopping {
                        // Resuming a continuation only schedules its task, so doing it with
                        // the lock held cannot deadlock.
                        finishLocked(task, reason: .stopRequested)?.deliver()
                        continue
                    }
                    if task.vm.paused {
                        task.state = .parked
                        continue
                    }
                    task.state = .running(worker: index)
                    if let last = task.lastWorker, last != index { task.counters.migrations.add(1, ordering: .relaxed) }
                    task.lastWorker = index
                    if task.parkedSince != 0 {
                        task.counters.parkedNanoseconds.add(HostClock.monotonicNanoseconds() &- task.parkedSince, ordering: .relaxed)
                        task.parkedSince = 0
                    }
                    return task
                }
                if shuttingDown, vms.isEmpty { return nil }
                // Sleep until work comes, or until the nearest halted vCPU's timeout.
                if let deadline = halted.compactMap({ if case let .halted(deadline) = $0.state { deadline } else { nil } }).min() {
                    lock.wait(untilNanoseconds: deadline)
                } else {
                    lock.wait()
                }
            }
        }
    }

    /// Moves halted vCPUs whose timeout has passed back to the queue; lock held.
    private func wakeSleepers(now: UInt64) {
        guard !halted.isEmpty else { return }
        halted.removeAll { task in
            guard case let .halted(deadline) = task.state else { return true }
            guard let deadline, deadline <= now else { return false }
            makeReadyLocked(task)
            return true
        }
    }

    /// Takes `task` off the workers into `state` (parked, or asleep until its deadline) and
    /// starts its parked time; lock held.
    private func setAsideLocked(_ task: ScheduledVCPU, _ state: ScheduledVCPU.State) {
        task.state = state
        task.parkedSince = HostClock.monotonicNanoseconds()
        task.counters.parks.add(1, ordering: .relaxed)
        if state.isHalted { halted.append(task) }
    }

    private func makeReadyLocked(_ task: ScheduledVCPU) {
        unwatchLocked(task)
        if task.vm.paused {
            task.state = .parked
        } else {
            task.state = .ready
            queue.append(task)
            lock.broadcast()
        }
    }

    private func runSlice(_ task: ScheduledVCPU, slot: WorkerSlot, thread: pthread_t) -> SliceEnd {
        let vcpu = task.vcpu
        let vm = task.vm
        let counters = task.counters
        counters.slices.add(1, ordering: .relaxed)
        let start = HostClock.monotonicNanoseconds()
        let deadline = start &+ sliceNanoseconds
        vcpu.kicker.move(to: thread)
        slot.current.withLock { $0 = vcpu.kicker }
        slot.deadline.store(deadline, ordering: .releasing)
        timer.sliceBegan()
        defer {
            slot.deadline.store(0, ordering: .releasing)
            slot.current.withLock { $0 = nil }
            vcpu.kicker.unbind()
        }

        var leftGuest = start
        if let call = task.pendingTrap {
            // The trap's wait ended (or the vCPU was woken): make the call again.
            task.pendingTrap = nil
            switch vm.dispatch.retry(call, vcpu: vcpu) {
            case .resume: break
            case let .wait(wait, call): return .waiting(wait, call)
            case let .stop(reason): return .stopped(reason)
            }
        }
        while true {
            if vm.stopFlag.load(ordering: .acquiring) { return .stopped(.stopRequested) }
            if vm.pauseFlag.load(ordering: .acquiring) { return .paused }
            let entered = HostClock.monotonicNanoseconds()
            counters.vmmNanoseconds.add(entered &- leftGuest, ordering: .relaxed)
            if entered >= deadline { return .expired }
            counters.entering(at: entered)
            let exit: VMExit
            do { exit = try vcpu.run() } catch { return .stopped(.failed(vcpu: vcpu.id, error: error)) }
            leftGuest = HostClock.monotonicNanoseconds()
            counters.guestNanoseconds.add(leftGuest &- entered, ordering: .relaxed)
            switch vm.dispatch.handle(exit, vcpu: vcpu, counters: counters) {
            case .resume:
                continue
            case .stop(.halted) where vm.halts != .stop:
                return .halted
            case let .stop(reason):
                return .stopped(reason)
            case let .wait(wait, call):
                return .waiting(wait, call)
            }
        }
    }

    /// Puts a vCPU where its slice's end says: back in the queue, parked, asleep, or done.
    private func settle(_ task: ScheduledVCPU, after end: SliceEnd) {
        // Held strongly here: once its last vCPU is done the scheduler lets go of the VM, and
        // the embedder may have already.
        let vm = task.vm
        var stopVM: StopReason?
        let completion: Completion? = lock.withLock {
            defer { lock.broadcast() }
            switch end {
            case .expired:
                makeReadyLocked(task)
            case .paused:
                setAsideLocked(task, .parked)
            case .halted where task.wakePending:
                task.wakePending = false
                makeReadyLocked(task)
            case .halted:
                setAsideLocked(task, .halted(deadline: vm.haltTimeoutNanoseconds.map { HostClock.monotonicNanoseconds() &+ $0 }))
            case let .waiting(wait, call):
                task.pendingTrap = call
                let watched = watchLocked(wait, for: task)
                // Without its descriptors watched, the vCPU looks again every millisecond.
                let deadline = watched ? wait.deadline : min(wait.deadline, HostClock.monotonicNanoseconds() &+ 1_000_000)
                setAsideLocked(task, .halted(deadline: deadline == .max ? nil : deadline))
            case let .stopped(reason):
                // The VM may have been stopped meanwhile; a vCPU's own reason stops the rest.
                if reason != .stopRequested, !vm.stopping { stopVM = reason }
                return finishLocked(task, reason: reason)
            }
            return nil
        }
        completion?.deliver()
        if let stopVM { stop(vm, reason: stopVM) }
    }

    // MARK: Trap waits

    /// Watches the descriptors of `task`'s trap wait on the event loop; false if they cannot
    /// be watched (the wait then ends by its deadline, checked every millisecond). Lock held.
    private func watchLocked(_ wait: TrapWait, for task: ScheduledVCPU) -> Bool {
        do throws(Errno) {
            if trapWaits == nil { trapWaits = try EventLoop(name: "hv-trap-waits", logger: logger) }
            guard let loop = trapWaits else { return false }
            for descriptor in wait.readable {
                let raw = dup(descriptor.rawValue)
                guard raw >= 0 else { throw Errno(rawValue: errno) }
                let duplicate = FileDescriptor(rawValue: raw)
                do throws(Errno) {
                    let registration = try loop.register(duplicate) { [weak self, weak task] in
                        guard let self, let task else { return }
                        self.trapWaitEnded(task)
                    }
                    task.waitRegistrations.append((registration, duplicate))
                } catch {
                    try? duplicate.close()
                    throw error
                }
            }
            return true
        } catch {
            logger.error("cannot watch a trap's descriptors; polling instead", metadata: ["error": "\(error)"])
            unwatchLocked(task)
            return false
        }
    }

    /// Stops watching `task`'s trap wait; lock held.
    private func unwatchLocked(_ task: ScheduledVCPU) {
        guard !task.waitRegistrations.isEmpty else { return }
        for (registration, descriptor) in task.waitRegistrations {
            trapWaits?.unregister(registration)
            try? descriptor.close()
        }
        task.waitRegistrations = []
    }

    /// On the event loop: a descriptor of `task`'s trap wait is readable.
    private func trapWaitEnded(_ task: ScheduledVCPU) {
        lock.withLock {
            guard task.state.isHalted, task.pendingTrap != nil else { return }
            halted.removeAll { $0 === task }
            makeReadyLocked(task)
        }
    }

    // MARK: Lifecycle of one VM

    /// Waiters to resume once the lock is released.
    private struct Completion {
        let waiters: [CheckedContinuation<StopReason, Never>]
        let reason: StopReason
        func deliver() { for waiter in waiters { waiter.resume(returning: reason) } }
    }

    /// Marks `task` done; when it was its VM's last, the VM is complete. Lock held.
    private func finishLocked(_ task: ScheduledVCPU, reason: StopReason) -> Completion? {
        let vm = task.vm
        unwatchLocked(task)
        task.pendingTrap = nil
        task.state = .done
        vm.reasons[task.id] = reason
        if vm.vmReason == nil || (vm.vmReason == .stopRequested && reason != .stopRequested) { vm.vmReason = reason }
        lock.broadcast()
        guard vm.vcpus.allSatisfy({ $0.state == .done }) else { return nil }
        vms.removeValue(forKey: ObjectIdentifier(vm))
        logger.debug("VM stopped", metadata: ["reason": "\(vm.vmReason ?? reason)"])
        defer { vm.waiters = [] }
        return Completion(waiters: vm.waiters, reason: vm.vmReason ?? reason)
    }

    func stop(_ vm: ScheduledVM, reason: StopReason) {
        var completions: [Completion] = []
        let first: Bool = lock.withLock {
            let first = !vm.stopping
            vm.stopping = true
            vm.stopFlag.store(true, ordering: .releasing)
            if reason != .stopRequested, vm.vmReason == nil || vm.vmReason == .stopRequested { vm.vmReason = reason }
            for task in vm.vcpus {
                switch task.state {
                case .parked, .halted:
                    if let completion = finishLocked(task, reason: .stopRequested) { completions.append(completion) }
                case .running:
                    task.vcpu.kicker.kick()
                case .ready, .done:
                    // A ready vCPU is finished when a worker takes it from the queue.
                    break
                }
            }
            halted.removeAll { $0.state == .done }
            lock.broadcast()
            return first
        }
        for completion in completions { completion.deliver() }
        if first { vm.dispatch.notifyTrapsOfStop() }
    }

    func pause(_ vm: ScheduledVM) -> Bool {
        lock.withLock {
            guard !vm.stopping else { return false }
            vm.paused = true
            vm.pauseFlag.store(true, ordering: .releasing)
            for task in queue.remove(where: { $0.vm === vm }) where task.state == .ready {
                setAsideLocked(task, .parked)
            }
            for task in vm.vcpus {
                if case .running = task.state { task.vcpu.kicker.kick() }
            }
            while !vm.stopping, vm.vcpus.contains(where: { if case .running = $0.state { true } else { false } }) {
                lock.wait()
            }
            return !vm.stopping
        }
    }

    func resume(_ vm: ScheduledVM) {
        lock.withLock {
            guard vm.paused else { return }
            vm.paused = false
            vm.pauseFlag.store(false, ordering: .releasing)
            for task in vm.vcpus where task.state == .parked { makeReadyLocked(task) }
            lock.broadcast()
        }
    }

    func wake(_ vm: ScheduledVM) {
        lock.withLock {
            // A vCPU that is not asleep yet may be on its way to the halt this wake is for.
            for task in vm.vcpus where !task.state.isHalted && task.state != .done { task.wakePending = true }
            halted.removeAll { task in
                guard task.vm === vm else { return false }
                makeReadyLocked(task)
                return true
            }
        }
    }

    func withPausedVCPU<T>(_ vm: ScheduledVM, _ id: UInt32, _ body: (VCPU) throws(KVMError) -> T) throws(KVMError) -> T? {
        // The lock is held across `body`, so no worker can take the vCPU meanwhile.
        try lock.withLock { () throws(KVMError) -> T? in
            guard vm.paused, !vm.stopping,
                  let task = vm.vcpus.first(where: { $0.id == id }), task.state == .parked || task.state.isHalted else { return nil }
            return try body(task.vcpu)
        }
    }
}

extension ScheduledVCPU.State {
    var isHalted: Bool { if case .halted = self { true } else { false } }
}


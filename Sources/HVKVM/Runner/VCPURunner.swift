import HVCore
import Logging
import Synchronization
import SystemPackage

/// Runs a VM's vCPUs, one host thread each, and dispatches their port-I/O and MMIO exits to
/// the buses. Lifecycle: ``start(vcpuCount:setup:)``, then ``stop()`` from any thread, and
/// ``join()`` or ``wait()`` for the ``StopReason``.
///
/// The first vCPU that stops for a reason of its own (halt, triple fault, system event,
/// error) stops the whole VM: the other vCPUs are kicked out and end with
/// ``StopReason/stopRequested``; the VM's reason is the first one.
public final class VCPURunner: Sendable {
    /// What an exit handler decided.
    public enum ExitAction: Sendable {
        /// The exit is dealt with; run the guest again.
        case resume
        /// Stop the VM for this reason.
        case stop(StopReason)
    }

    /// Prepares vCPU `vcpu.id` on its own thread before it first runs: registers, CPUID, ...
    public typealias Setup = @Sendable (VCPU) throws(KVMError) -> Void
    /// Sees every exit first, on the vCPU's thread; return nil for the default handling.
    public typealias ExitHandler = @Sendable (VCPU, VMExit) -> ExitAction?

    /// The VM whose vCPUs run.
    public let vm: VirtualMachine
    /// Where port-I/O exits go.
    public let pio: Bus
    /// Where MMIO exits go.
    public let mmio: Bus
    /// Doorbells that need the trapping vCPU's registers (hypercalls), by where they trap.
    public var traps: [TrapSite: any RegisterTrap] { dispatch.traps }
    /// What a guest reset does.
    public let resetPolicy: ResetPolicy
    /// Which host CPUs the vCPU threads may run on.
    public let placement: VCPUPlacement
    private let dispatch: ExitDispatch
    private let logger: Logger

    private struct State {
        var started = false
        var threads: [HostThread] = []
        var kickers: [VCPUKicker] = []
        /// One per vCPU thread: wakes it from a trap's wait (pause, stop, restart).
        var wakers: [EventFD] = []
        var reasons: [UInt32: StopReason] = [:]
        var vmReason: StopReason?
        /// Why the embedder stopped the VM, when it was not a plain stop (a reset request
        /// under ResetPolicy.stop); it explains the vCPUs' stopRequested.
        var requestedReason: StopReason?
        var running = 0
        var restarts = 0
        var restarting = false
        var waiters: [CheckedContinuation<StopReason, Never>] = []
    }

    private let state = Locked(State())
    private let stopRequested = Atomic<Bool>(false)
    private let parking = VCPUParking()
    private let counters = Locked<[UInt32: VCPUCounters]>([:])
    /// Each vCPU's state right after setup, kept when the reset policy may restart.
    private let snapshots = Locked<[UInt32: VCPUSnapshot]>([:])

    /// - Parameters:
    ///   - vm: the VM whose vCPUs run.
    ///   - pio: the port-I/O bus exits go to.
    ///   - mmio: the MMIO bus exits go to.
    ///   - traps: handlers for port writes, MMIO writes or forwarded `vmcall`s that need the
    ///     vCPU's registers (see `RegisterTrap`). They are checked before the buses. When
    ///     there are any, each vCPU syncs its general registers through kvm_run (if the host
    ///     can), so a trap costs one exit and no register ioctls.
    ///   - resetPolicy: what a triple fault, a reset system event or ``requestReset()`` does.
    ///   - placement: which host CPUs each vCPU thread may run on.
    ///   - logger: where the runner logs.
    ///   - exitHandler: sees every exit first.
    public init(vm: VirtualMachine, pio: Bus, mmio: Bus, traps: [TrapSite: any RegisterTrap] = [:],
                resetPolicy: ResetPolicy = .stop,
                placement: VCPUPlacement = .unpinned,
                logger: Logger? = nil, exitHandler: ExitHandler? = nil) {
        self.vm = vm
        self.pio = pio
        self.mmio = mmio
        self.resetPolicy = resetPolicy
        self.placement = placement
        let logger = logger ?? Logger(label: "hvkit.runner")
        self.logger = logger
        dispatch = ExitDispatch(pio: pio, mmio: mmio, traps: traps, exitHandler: exitHandler, logger: logger)
    }

    /// Creates vCPUs 0..<vcpuCount, each on its own thread named `vcpu-N`, runs `setup` on
    /// each, and lets them all enter the guest together. If any setup fails, none runs and
    /// the first error is thrown (the threads are already gone when it is).
    public func start(vcpuCount: Int, setup: @escaping Setup) throws(KVMError) {
        guard vcpuCount > 0 else { throw .invalidArgument("vCPU count \(vcpuCount)") }
        let alreadyStarted = state.withLock { state in
            defer { state.started = true }
            return state.started
        }
        guard !alreadyStarted else { throw .invalidArgument("VCPURunner.start called twice") }

        let barrier = try StartBarrier()
        let ready = barrier.ready
        let go = barrier.go

        for index in 0..<vcpuCount {
            let id = UInt32(index)
            state.withLock { $0.running += 1 }
            let thread: HostThread
            do throws(Errno) {
                thread = try HostThread(name: "vcpu-\(id)") { [self] in
                    vcpuThread(id: id, setup: setup, barrier: barrier)
                }
            } catch {
                state.withLock { $0.running -= 1 }
                barrier.errors.withLock { $0.append(.systemCall("pthread_create", error)) }
                // Count the missing thread as ready so the wait below ends.
                try? ready.signal()
                continue
            }
            state.withLock { $0.threads.append(thread) }
        }

        // Wait until every vCPU reports setup done (or failed).
        var reported: UInt64 = 0
        while reported < UInt64(vcpuCount) {
            guard let count = try? ready.consume() else { break }
            reported += count
        }
        if let error = barrier.errors.withLock({ $0.first }) {
            stopRequested.store(true, ordering: .releasing)
            try? go.signal(UInt64(vcpuCount))
            _ = join()
            throw error
        }
        try? go.signal(UInt64(vcpuCount))
    }

    private func vcpuThread(id: UInt32, setup: Setup, barrier: StartBarrier) {
        let ready = barrier.ready
        var reason: StopReason = .stopRequested
        do throws(KVMError) {
            if let cpus = placement.cpus(for: id) {
                do throws(Errno) { try HostThread.pinCurrentThread(to: cpus) } catch { throw .systemCall("sched_setaffinity(vcpu-\(id), \(cpus))", error) }
            }
            let vcpu = try vm.createVCPU(id: id)
            let waker: EventFD
            do throws(Errno) { waker = try EventFD(nonBlocking: true) } catch { throw .systemCall("eventfd", error) }
            state.withLock { state in
                state.kickers.append(vcpu.kicker)
                state.wakers.append(waker)
            }
            do throws(KVMError) {
                try setup(vcpu)
                try dispatch.prepare(vcpu)
                if case .restart = resetPolicy {
                    let snapshot = try VCPUSnapshot(of: vcpu)
                    snapshots.withLock { $0[id] = snapshot }
                }
            } catch {
                barrier.errors.withLock { $0.append(error) }
                try? ready.signal()
                finish(id: id, reason: .failed(vcpu: id, error: error))
                return
            }
            let vcpuCounters = VCPUCounters()
            counters.withLock { $0[id] = vcpuCounters }
            parking.enter(id)
            try? ready.signal()
            _ = try? barrier.go.consume()
            reason = runLoop(vcpu, counters: vcpuCounters, waker: waker)
            parking.leave(id)
        } catch {
            barrier.errors.withLock { $0.append(error) }
            try? ready.signal()
            reason = .failed(vcpu: id, error: error)
        }
        finish(id: id, reason: reason)
    }

    private func runLoop(_ vcpu: VCPU, counters: VCPUCounters, waker: EventFD) -> StopReason {
        let id = vcpu.id
        var leftGuest = HostClock.monotonicNanoseconds()
        // A trap call that is waiting (a hypercall poll), and the restart count when it began.
        var pending: (wait: TrapWait, call: ExitDispatch.PendingTrap, restarts: Int)?
        while true {
            if parking.pauseFlag.load(ordering: .acquiring) {
                parking.park(vcpu, counters: counters)
                leftGuest = HostClock.monotonicNanoseconds()
                // A restart put the vCPU back to its initial state: the call is gone.
                if let waiting = pending, waiting.restarts != restartCount { pending = nil }
            }
            if stopRequested.load(ordering: .acquiring) { return .stopRequested }
            var disposition: ExitDispatch.Disposition
            if let waiting = pending {
                // Wait on this thread, but give it back at once for a pause or a stop.
                _ = try? waker.consume()
                if parking.pauseFlag.load(ordering: .acquiring) || stopRequested.load(ordering: .acquiring) { continue }
                let start = HostClock.monotonicNanoseconds()
                let end = waiting.wait.block(alsoWakingOn: waker.fileDescriptor)
                counters.parks.add(1, ordering: .relaxed)
                counters.parkedNanoseconds.add(HostClock.monotonicNanoseconds() &- start, ordering: .relaxed)
                leftGuest = HostClock.monotonicNanoseconds()
                // Woken, interrupted, or ended while a pause or stop came in (a stop also
                // makes the trap's own descriptors readable): the top of the loop decides.
                guard end == .ready || end == .deadline, !parking.pauseFlag.load(ordering: .acquiring),
                      !stopRequested.load(ordering: .acquiring) else { continue }
                pending = nil
                disposition = dispatch.retry(waiting.call, vcpu: vcpu)
            } else {
                let exit: VMExit
                let entered = HostClock.monotonicNanoseconds()
                counters.entering(at: entered)
                counters.vmmNanoseconds.add(entered &- leftGuest, ordering: .relaxed)
                do { exit = try vcpu.run() } catch { return .failed(vcpu: id, error: error) }
                leftGuest = HostClock.monotonicNanoseconds()
                counters.guestNanoseconds.add(leftGuest &- entered, ordering: .relaxed)
                disposition = dispatch.handle(exit, vcpu: vcpu, counters: counters)
            }
            switch disposition {
            case .resume:
                continue
            case let .wait(wait, call):
                pending = (wait, call, restartCount)
            case let .stop(reason):
                // A reset the policy allows: park at the top of the loop; the restart puts
                // this vCPU back to its initial state before it runs again.
                if reason.isGuestReset, beginRestart(after: reason) { continue }
                return reason
            }
        }
    }

    private func finish(id: UInt32, reason: StopReason) {
        logger.debug("vCPU stopped", metadata: ["vcpu": "\(id)", "reason": "\(reason)"])
        let (waiters, vmReason): ([CheckedContinuation<StopReason, Never>], StopReason?) = state.withLock { state in
            state.reasons[id] = reason
            let reason = reason == .stopRequested ? state.requestedReason ?? reason : reason
            // The VM's reason is the first vCPU's, except that a real reason (an error, a
            // halt) replaces a plain stop request that happened to be recorded first.
            let isFirst = state.vmReason == nil
            let explainsStop = state.vmReason == .stopRequested && reason != .stopRequested
            if isFirst || explainsStop { state.vmReason = reason }
            state.running -= 1
            guard state.running == 0 else { return ([], nil) }
            defer { state.waiters = [] }
            return (state.waiters, state.vmReason)
        }
        // A vCPU that stops for its own reason takes the others down with it.
        if reason != .stopRequested { requestStop() }
        if let vmReason { for waiter in waiters { waiter.resume(returning: vmReason) } }
    }

    private func requestStop() {
        stopRequested.store(true, ordering: .releasing)
        parking.stop()
        // Traps may be waiting (a hypercall poll); they return once told.
        dispatch.notifyTrapsOfStop()
        kickAll()
    }

    /// Kicks every vCPU out of the guest, and out of a trap's wait.
    private func kickAll() {
        let (kickers, wakers) = state.withLock { ($0.kickers, $0.wakers) }
        for kicker in kickers { kicker.kick() }
        for waker in wakers { try? waker.signal() }
    }

    /// Asks every vCPU to leave the guest and stop. Returns at once; use ``join()`` or
    /// ``wait()`` to know when they have. Callable from any thread, any number of times.
    public func stop() {
        requestStop()
    }

    // MARK: Reset

    /// Asks for a reset of the whole VM, as a guest does through a reset device (the i8042's
    /// pulse, port 0xCF9): under ``ResetPolicy/restart(limit:prepare:)`` every vCPU restarts from its
    /// initial state, otherwise (or past the limit) the VM stops with
    /// ``StopReason/resetRequested``. Returns at once; callable from any thread, including a
    /// vCPU's own (a device's write handler).
    public func requestReset() {
        guard !beginRestart(after: .resetRequested) else { return }
        state.withLock { state in
            if state.requestedReason == nil { state.requestedReason = .resetRequested }
        }
        requestStop()
    }

    /// Starts a restart if the policy allows one more: every vCPU parks, the policy's `prepare`
    /// runs, each vCPU's initial state is put back on its own thread, and they run again.
    /// A thread of its own drives it, since the vCPU that saw the reset must park too.
    /// True when a restart is under way (this one or one already started).
    private func beginRestart(after reason: StopReason) -> Bool {
        guard case let .restart(limit, _) = resetPolicy, !stopRequested.load(ordering: .acquiring) else { return false }
        let begin: Bool? = state.withLock { state in
            if state.restarting { return false }
            guard state.restarts < limit else { return nil }
            state.restarts += 1
            state.restarting = true
            return true
        }
        guard let begin else {
            logger.info("guest reset past the restart limit; stopping", metadata: ["limit": "\(limit)", "reason": "\(reason)"])
            return false
        }
        guard begin else { return true }
        logger.info("guest reset; restarting from the initial state", metadata: ["reason": "\(reason)"])
        parking.requestPause(by: .restart)
        kickAll()
        do throws(Errno) {
            let driver = try HostThread(name: "vm-restart") { [self] in performRestart() }
            state.withLock { $0.threads.append(driver) }
        } catch {
            parking.resume(by: .restart)
            state.withLock { $0.restarting = false }
            stopFailedRestart(.failed(vcpu: 0, error: .systemCall("pthread_create(vm-restart)", error)))
        }
        return true
    }

    private func performRestart() {
        defer {
            state.withLock { $0.restarting = false }
            parking.resume(by: .restart)
        }
        guard parking.waitUntilParked() else { return }
        do throws(KVMError) {
            if case let .restart(_, prepare) = resetPolicy { try prepare?() }
        } catch {
            stopFailedRestart(.failed(vcpu: 0, error: error))
            return
        }
        let failure = Locked<StopReason?>(nil)
        for (id, snapshot) in snapshots.withLock({ $0 }) {
            _ = parking.perform(on: id) { vcpu in
                do throws(KVMError) { try snapshot.restore(to: vcpu) } catch {
                    failure.withLock { $0 = $0 ?? .failed(vcpu: id, error: error) }
                }
            }
        }
        if let reason = failure.withLock({ $0 }) { stopFailedRestart(reason) }
    }

    /// A restart could not be done: the VM stops, and `reason` is why.
    private func stopFailedRestart(_ reason: StopReason) {
        state.withLock { $0.requestedReason = reason }
        requestStop()
    }

    /// How many times the guest has been restarted.
    public var restartCount: Int { state.withLock { $0.restarts } }

    // MARK: Pause and resume

    /// Takes every vCPU out of the guest and parks it with its state intact; returns once all
    /// are parked (true), or false if the VM stopped first. Callable from any thread except a
    /// vCPU's own. A vCPU waiting in a trap (a hypercall poll) leaves the wait and parks; the
    /// wait goes on after the resume, to the same deadline.
    @discardableResult
    public func pause() -> Bool {
        parking.requestPause(by: .embedder)
        kickAll()
        return parking.waitUntilParked()
    }

    /// Lets parked vCPUs run again from where they were.
    public func resume() {
        parking.resume(by: .embedder)
    }

    /// Runs `body` with vCPU `id` on that vCPU's own thread while the VM is paused (to read or
    /// change its registers), and waits for it. Returns nil if the VM is not paused or the
    /// vCPU is not running. Keep `body` short: other parked vCPUs wait for it.
    public func withPausedVCPU<T: Sendable>(_ id: UInt32, _ body: @escaping @Sendable (VCPU) -> T) -> T? {
        let result = Locked<T?>(nil)
        guard parking.perform(on: id, { vcpu in
            let value = body(vcpu)
            result.withLock { $0 = value }
        }) else { return nil }
        return result.withLock { $0 }
    }

    /// Counters of every vCPU that has started, by id.
    public func statistics() -> [UInt32: VCPUStatistics] {
        counters.withLock { counters in
            var snapshot: [UInt32: VCPUStatistics] = [:]
            for (id, counter) in counters { snapshot[id] = counter.snapshot(vcpu: id) }
            return snapshot
        }
    }

    /// Blocks until every vCPU thread has ended, and returns why the VM stopped.
    @discardableResult
    public func join() -> StopReason {
        // A restart's driver thread may be added while the vCPU threads are joined.
        while true {
            let threads = state.withLock { state in
                defer { state.threads = [] }
                return state.threads
            }
            if threads.isEmpty { break }
            for thread in threads { thread.join() }
        }
        return state.withLock { $0.vmReason } ?? .stopRequested
    }

    /// Suspends until every vCPU has stopped, and returns why the VM stopped. Does not join
    /// the threads (they are about to end); ``join()`` still may be called.
    public func wait() async -> StopReason {
        await withCheckedContinuation { continuation in
            let reason: StopReason? = state.withLock { state in
                if state.running == 0, state.started {
                    return state.vmReason ?? .stopRequested
                }
                state.waiters.append(continuation)
                return nil
            }
            if let reason { continuation.resume(returning: reason) }
        }
    }

    /// Why each vCPU stopped, by vCPU id (filled in as they stop).
    public var vcpuStopReasons: [UInt32: StopReason] { state.withLock { $0.reasons } }

    /// Why the VM stopped, once it has.
    public var stopReason: StopReason? {
        state.withLock { $0.running == 0 && $0.started ? $0.vmReason : nil }
    }
}

/// How ``VCPURunner/start(vcpuCount:setup:)`` and its threads meet: each thread adds 1 to
/// `ready` when its setup is done (or failed), and waits for one unit of `go`.
private final class StartBarrier: Sendable {
    let ready: EventFD
    let go: EventFD
    let errors = Locked<[KVMError]>([])

    init() throws(KVMError) {
        do {
            ready = try EventFD()
            go = try EventFD(semaphore: true)
        } catch {
            throw .systemCall("eventfd", error)
        }
    }
}

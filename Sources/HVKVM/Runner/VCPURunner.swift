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

    public let vm: VirtualMachine
    public let pio: Bus
    public let mmio: Bus
    /// Doorbells that need the trapping vCPU's registers (hypercalls), by where they trap.
    public let traps: [TrapSite: any RegisterTrap]
    // The same, split by kind into small arrays: a linear scan of one or two entries costs
    // less per exit than hashing a TrapSite.
    private let portTraps: [(port: UInt16, trap: any RegisterTrap)]
    private let mmioTraps: [(address: GuestAddress, trap: any RegisterTrap)]
    private let vmcallTrap: (any RegisterTrap)?
    private let exitHandler: ExitHandler?
    private let logger: Logger

    private struct State {
        var started = false
        var threads: [HostThread] = []
        var kickers: [VCPUKicker] = []
        var reasons: [UInt32: StopReason] = [:]
        var vmReason: StopReason?
        var running = 0
        var joined = false
        var waiters: [CheckedContinuation<StopReason, Never>] = []
    }

    private let state = Mutex(State())
    private let stopRequested = Atomic<Bool>(false)
    private let parking = VCPUParking()
    private let counters = Mutex<[UInt32: VCPUCounters]>([:])

    /// - Parameters:
    ///   - traps: handlers for port writes, MMIO writes or forwarded `vmcall`s that need the
    ///     vCPU's registers (see ``RegisterTrap``). They are checked before the buses. When
    ///     there are any, each vCPU syncs its general registers through kvm_run (if the host
    ///     can), so a trap costs one exit and no register ioctls.
    ///   - exitHandler: sees every exit first.
    public init(vm: VirtualMachine, pio: Bus, mmio: Bus, traps: [TrapSite: any RegisterTrap] = [:],
                logger: Logger? = nil, exitHandler: ExitHandler? = nil) {
        self.vm = vm
        self.pio = pio
        self.mmio = mmio
        self.traps = traps
        var portTraps: [(port: UInt16, trap: any RegisterTrap)] = []
        var mmioTraps: [(address: GuestAddress, trap: any RegisterTrap)] = []
        for (site, trap) in traps {
            switch site {
            case let .port(port): portTraps.append((port, trap))
            case let .mmio(address): mmioTraps.append((address, trap))
            case .vmcall: break
            }
        }
        self.portTraps = portTraps
        self.mmioTraps = mmioTraps
        vmcallTrap = traps[.vmcall]
        self.exitHandler = exitHandler
        self.logger = logger ?? Logger(label: "hvkit.runner")
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
            let vcpu = try vm.createVCPU(id: id)
            state.withLock { $0.kickers.append(vcpu.kicker) }
            do throws(KVMError) {
                try setup(vcpu)
            } catch {
                barrier.errors.withLock { $0.append(error) }
                try? ready.signal()
                finish(id: id, reason: .failed(vcpu: id, error: error))
                return
            }
            if !traps.isEmpty, !vcpu.syncedRegisterSets.contains(.general), vm.kvm.has(.syncRegisters) {
                do throws(KVMError) {
                    try vcpu.enableSyncRegisters(vcpu.syncedRegisterSets.union(.general))
                } catch {
                    barrier.errors.withLock { $0.append(error) }
                    try? ready.signal()
                    finish(id: id, reason: .failed(vcpu: id, error: error))
                    return
                }
            }
            let vcpuCounters = VCPUCounters()
            counters.withLock { $0[id] = vcpuCounters }
            parking.enter(id)
            try? ready.signal()
            _ = try? barrier.go.consume()
            reason = runLoop(vcpu, counters: vcpuCounters)
            parking.leave(id)
        } catch {
            barrier.errors.withLock { $0.append(error) }
            try? ready.signal()
            reason = .failed(vcpu: id, error: error)
        }
        finish(id: id, reason: reason)
    }

    private func runLoop(_ vcpu: VCPU, counters: VCPUCounters) -> StopReason {
        let id = vcpu.id
        var leftGuest = HostClock.monotonicNanoseconds()
        while true {
            if parking.pauseFlag.load(ordering: .acquiring) {
                parking.park(vcpu, counters: counters)
                leftGuest = HostClock.monotonicNanoseconds()
            }
            if stopRequested.load(ordering: .acquiring) { return .stopRequested }
            let exit: VMExit
            let entered = HostClock.monotonicNanoseconds()
            counters.vmmNanoseconds.add(entered &- leftGuest, ordering: .relaxed)
            do { exit = try vcpu.run() } catch { return .failed(vcpu: id, error: error) }
            leftGuest = HostClock.monotonicNanoseconds()
            counters.guestNanoseconds.add(leftGuest &- entered, ordering: .relaxed)
            counters.exits.add(1, ordering: .relaxed)
            let trapped = trap(for: exit)
            counters.count(exit, trapped: trapped != nil)
            if let exitHandler, let action = exitHandler(vcpu, exit) {
                switch action {
                case .resume: continue
                case let .stop(reason): return reason
                }
            }
            if let trapped {
                if let reason = handleTrap(trapped.trap, at: trapped.site, value: trapped.value, vcpu: vcpu) { return reason }
                continue
            }
            switch exit {
            case let .ioOut(port, size, data):
                guard let width = AccessWidth(byteCount: size) else { return .unhandledExit(vcpu: id, exit: "out of size \(size)") }
                for element in 0..<(data.count / size) {
                    pio.write(at: GuestAddress(UInt64(port)), width: width, value: data.value(element: element, width: size))
                }
            case let .ioIn(port, size, data):
                guard let width = AccessWidth(byteCount: size) else { return .unhandledExit(vcpu: id, exit: "in of size \(size)") }
                for element in 0..<(data.count / size) {
                    data.setValue(pio.read(at: GuestAddress(UInt64(port)), width: width), element: element, width: size)
                }
            case let .mmioWrite(address, data):
                if let width = AccessWidth(byteCount: data.count) {
                    mmio.write(at: address, width: width, value: data.value(width: data.count))
                } else {
                    // Odd lengths (3, 5, 6, 7 bytes) match no device register: dropped like
                    // any write to nothing.
                    logger.debug("MMIO write of odd length dropped", metadata: ["vcpu": "\(id)", "address": "\(address)", "length": "\(data.count)"])
                }
            case let .mmioRead(address, data):
                if let width = AccessWidth(byteCount: data.count) {
                    data.setValue(mmio.read(at: address, width: width), width: data.count)
                } else {
                    for index in 0..<data.count { data[index] = 0xFF }
                }
            case .interrupted, .interruptWindowOpen:
                continue
            case .halt:
                return .halted(vcpu: id)
            case .shutdown:
                return .shutdown(vcpu: id)
            case let .systemEvent(event):
                return .systemEvent(event, vcpu: id)
            case let .internalError(suberror, data):
                return .internalError(vcpu: id, suberror: suberror, data: data)
            case let .failEntry(reason, _):
                return .failEntry(vcpu: id, reason: reason)
            case let .hypercall(number, _, _):
                // Only reached without a vmcall trap.
                return .unhandledExit(vcpu: id, exit: "hypercall \(number)")
            case let .exception(number, errorCode):
                return .unhandledExit(vcpu: id, exit: "exception \(number) (error code \(errorCode))")
            case .debug:
                return .unhandledExit(vcpu: id, exit: "debug")
            case let .unknown(reason):
                return .unhandledExit(vcpu: id, exit: "KVM exit reason \(reason)")
            }
        }
    }

    /// The register trap `exit` goes to instead of a bus, with the value the guest wrote.
    private func trap(for exit: VMExit) -> (site: TrapSite, trap: any RegisterTrap, value: UInt64)? {
        switch exit {
        case let .ioOut(port, size, data):
            guard !portTraps.isEmpty, let trap = portTraps.first(where: { $0.port == port })?.trap else { return nil }
            return (.port(port), trap, data.value(width: min(size, 8)))
        case let .mmioWrite(address, data):
            guard !mmioTraps.isEmpty, let trap = mmioTraps.first(where: { $0.address == address })?.trap else { return nil }
            return (.mmio(address), trap, data.value(width: data.count))
        case .hypercall:
            return vmcallTrap.map { (.vmcall, $0, 0) }
        default:
            return nil
        }
    }

    /// Runs a trap handler with the vCPU's registers and writes back what it changed. For a
    /// forwarded `vmcall`, KVM sets RAX from kvm_run's hypercall result on the next entry, so
    /// the handler's RAX goes there too.
    private func handleTrap(_ trap: any RegisterTrap, at site: TrapSite, value: UInt64, vcpu: VCPU) -> StopReason? {
        var registers: Registers
        do { registers = try vcpu.registers() } catch { return .failed(vcpu: vcpu.id, error: error) }
        let before = registers
        let outcome = trap.trap(at: site, value: value, vcpu: vcpu.id, registers: &registers)
        if registers != before {
            do { try vcpu.setRegisters(registers) } catch { return .failed(vcpu: vcpu.id, error: error) }
        }
        if site == .vmcall { vcpu.setHypercallResult(registers.rax) }
        switch outcome {
        case .resume: return nil
        case let .stop(request): return .guestRequested(request, vcpu: vcpu.id)
        }
    }

    private func finish(id: UInt32, reason: StopReason) {
        logger.debug("vCPU stopped", metadata: ["vcpu": "\(id)", "reason": "\(reason)"])
        let (waiters, vmReason): ([CheckedContinuation<StopReason, Never>], StopReason?) = state.withLock { state in
            state.reasons[id] = reason
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
        var told = Set<ObjectIdentifier>()
        for trap in traps.values where told.insert(ObjectIdentifier(trap)).inserted { trap.vmStopping() }
        for kicker in state.withLock({ $0.kickers }) { kicker.kick() }
    }

    /// Asks every vCPU to leave the guest and stop. Returns at once; use ``join()`` or
    /// ``wait()`` to know when they have. Callable from any thread, any number of times.
    public func stop() {
        requestStop()
    }

    // MARK: Pause and resume

    /// Takes every vCPU out of the guest and parks it with its state intact; returns once all
    /// are parked (true), or false if the VM stopped first. Callable from any thread except a
    /// vCPU's own. A vCPU waiting inside a trap (a hypercall poll) parks when the wait ends.
    @discardableResult
    public func pause() -> Bool {
        parking.requestPause()
        for kicker in state.withLock({ $0.kickers }) { kicker.kick() }
        return parking.waitUntilParked()
    }

    /// Lets parked vCPUs run again from where they were.
    public func resume() {
        parking.resume()
    }

    /// Runs `body` with vCPU `id` on that vCPU's own thread while the VM is paused (to read or
    /// change its registers), and waits for it. Returns nil if the VM is not paused or the
    /// vCPU is not running. Keep `body` short: other parked vCPUs wait for it.
    public func withPausedVCPU<T: Sendable>(_ id: UInt32, _ body: @escaping @Sendable (VCPU) -> T) -> T? {
        let result = Mutex<T?>(nil)
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
        let threads = state.withLock { state in
            defer { state.threads = [] }
            return state.threads
        }
        for thread in threads { thread.join() }
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
    let errors = Mutex<[KVMError]>([])

    init() throws(KVMError) {
        do {
            ready = try EventFD()
            go = try EventFD(semaphore: true)
        } catch {
            throw .systemCall("eventfd", error)
        }
    }
}

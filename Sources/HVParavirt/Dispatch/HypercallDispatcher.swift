import HVCore
import Logging
import Synchronization

/// Decodes hypercalls, runs their handlers, and returns results to the guest.
///
/// It is the `RegisterTrap` an embedding program gives its vCPU runner for the doorbells in
/// ``trapSites``. For each trap it takes the number (the value written to the doorbell, or RAX
/// for `vmcall`) and the six argument registers, runs the handler from the
/// ``HypercallTable``, and puts the result or a negative ``HypercallErrno`` in RAX. An
/// unknown number gets ENOSYS. The guest can never make it crash or wait past a stop.
///
/// The dispatcher itself answers ``HypercallNumber/info``, ``HypercallNumber/null`` and the
/// shared-memory channel (``HypercallNumber/channelSetup``, ``HypercallNumber/channelNotify``),
/// and counts every call (``statistics()``).
public final class HypercallDispatcher: RegisterTrap {
    /// Numbers the dispatcher answers itself; a table may not register them.
    static let reservedNumbers: Set<HypercallNumber> = [.info, .null, .channelSetup, .channelNotify]
    static let builtinCounterSlots: UInt32 = 64

    /// The guest memory arguments point into.
    public let memory: any GuestMemory
    /// What ``HypercallNumber/info`` reports: the table's info, plus memory size, the
    /// channel and the doorbells present.
    public let info: ParavirtInfo
    /// Where guests may trap into this dispatcher, for the vCPU runner.
    public let doorbells: [TrapSite]

    private let entries: [UInt32: HypercallTable.Entry]
    private let stopObservers: [@Sendable () -> Void]
    /// Counters by number: built-in numbers index an array, others a dictionary.
    private let builtinCounters: [HypercallCounters?]
    private let counters: [UInt32: HypercallCounters]
    private let unknownCounters = HypercallCounters()
    let channel = Locked<HypercallChannel?>(nil)
    private let stopping = Atomic<Bool>(false)
    private let encodedInfo: [UInt8]
    private let logger: Logger

    /// - Parameters:
    ///   - memory: the guest memory arguments point into.
    ///   - table: the hypercalls offered.
    ///   - doorbells: where guests trap: the port-I/O doorbell by default; add an MMIO address
    ///     or `.vmcall` where the platform has them.
    ///   - logger: where the dispatcher logs refused calls.
    public init(memory: any GuestMemory, table: HypercallTable, doorbells: [TrapSite] = [.port(HypercallABI.doorbellPort)],
                logger: Logger = Logger(label: "hvkit.hypercall")) {
        self.memory = memory
        self.doorbells = doorbells
        self.logger = logger
        entries = table.entries
        stopObservers = table.stopObservers
        var info = table.info
        info.memorySize = memory.ramSize
        info.features.insert(.channel)
        for site in doorbells {
            switch site {
            case .mmio: info.features.insert(.mmioDoorbell)
            case .vmcall: info.features.insert(.vmcall)
            case .port: break
            }
        }
        self.info = info
        encodedInfo = info.encoded
        var counters: [UInt32: HypercallCounters] = [:]
        for number in table.entries.keys { counters[number] = HypercallCounters() }
        for number in Self.reservedNumbers { counters[number.rawValue] = HypercallCounters() }
        self.counters = counters
        builtinCounters = (0..<UInt32(Self.builtinCounterSlots)).map { counters[$0] }
    }

    /// The trap table for the vCPU runner: every doorbell mapped to this dispatcher.
    public var trapSites: [TrapSite: any RegisterTrap] {
        Dictionary(doorbells.map { ($0, self as any RegisterTrap) }, uniquingKeysWith: { first, _ in first })
    }

    // MARK: RegisterTrap

    /// Handles a doorbell: reads the call from the trapping vCPU's registers, dispatches it, and writes the result to RAX (or asks the runner to wait or stop).
    public func trap(at site: TrapSite, value: UInt64, vcpu: UInt32, registers: inout some GuestRegisterAccess) -> TrapOutcome {
        // The doorbell's value is EAX; for vmcall the number is RAX itself. Only 32 bits count.
        let raw = site == .vmcall ? registers[HypercallABI.resultRegister] : value
        let number = HypercallNumber(UInt32(truncatingIfNeeded: raw))
        let arguments = HypercallArguments(registers[.rdi], registers[.rsi], registers[.rdx],
                                           registers[.r10], registers[.r8], registers[.r9])
        switch dispatch(number, arguments, origin: .trap(vcpu: vcpu)) {
        case let .value(result):
            registers[HypercallABI.resultRegister] = result
            return .resume
        case let .stop(request):
            return .stop(request)
        case let .wait(wait):
            return .wait(wait)
        }
    }

    /// Ends the waits of handlers (polls) because the VM stops.
    public func vmStopping() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        for observer in stopObservers { observer() }
    }

    // MARK: Dispatch

    /// Runs hypercall `number` with `arguments` and returns what the guest gets: a value (a
    /// negative code on error, as two's complement), a request to stop, or a wait. Never
    /// throws. A call that waits is counted once, when it completes; its latency is that of
    /// its last attempt, not the time waited.
    public func dispatch(_ number: HypercallNumber, _ arguments: HypercallArguments, origin: HypercallOrigin) -> HypercallResult {
        let start = HostClock.monotonicNanoseconds()
        let result: HypercallResult
        var failed = false
        do throws(HypercallError) {
            result = try run(number, arguments, origin: origin)
        } catch {
            failed = true
            logger.debug("hypercall failed", metadata: ["number": "\(number)", "error": "\(error)"])
            result = .value(error.code.returnValue)
        }
        let counter = (number.rawValue < Self.builtinCounterSlots ? builtinCounters[Int(number.rawValue)] : counters[number.rawValue])
            ?? unknownCounters
        if case .wait = result { return result }
        counter.record(nanoseconds: HostClock.monotonicNanoseconds() &- start, failed: failed)
        return result
    }

    private func run(_ number: HypercallNumber, _ arguments: HypercallArguments, origin: HypercallOrigin) throws(HypercallError) -> HypercallResult {
        switch number {
        case .null:
            return .zero
        case .info:
            if arguments.a0 != 0 {
                do { try memory.write(encodedInfo, to: GuestAddress(arguments.a0)) } catch { throw .fault(error) }
            }
            return .value(UInt64(HypercallABI.version))
        case .channelSetup:
            guard case let .trap(vcpu) = origin else { throw HypercallError(.invalid, "channel setup from inside the channel") }
            let ring = try HypercallChannel(at: GuestAddress(arguments.a0), slots: arguments.a1, memory: memory)
            channel.withLock { $0 = ring }
            logger.debug("channel set up", metadata: ["vcpu": "\(vcpu)", "ring": "\(ring.base)", "slots": "\(ring.slots)"])
            return .zero
        case .channelNotify:
            guard case let .trap(vcpu) = origin else { throw HypercallError(.invalid, "channel notify from inside the channel") }
            return .count(try notifyChannel(vcpu: vcpu))
        default:
            guard let entry = entries[number.rawValue] else {
                throw HypercallError(.notImplemented, "no hypercall \(number.rawValue)")
            }
            if case .channel = origin, !entry.allowedOnChannel {
                throw HypercallError(.invalid, "\(entry.name) may not run on the channel")
            }
            return try entry.handler(HypercallCall(number: number, arguments: arguments, origin: origin, memory: memory))
        }
    }

    private func notifyChannel(vcpu: UInt32) throws(HypercallError) -> Int {
        let memory = self.memory
        return try channel.withLock { ring throws(HypercallError) -> Int in
            guard var current = ring else { throw HypercallError(.invalid, "channel notify before channel setup") }
            defer { ring = current }
            return try current.process(memory: memory) { number, flags, arguments in
                guard flags == 0 else { return HypercallErrno.invalid.returnValue }
                switch dispatch(number, arguments, origin: .channel(vcpu: vcpu)) {
                case let .value(value): return value
                // Not reachable: calls that stop or wait are not allowed on the channel.
                case .stop, .wait: return HypercallErrno.invalid.returnValue
                }
            }
        }
    }

    // MARK: Statistics

    /// Counters and latency histograms of every known hypercall, by number.
    public func statistics() -> [HypercallStatistics] {
        counters.keys.sorted().compactMap { statistics(for: HypercallNumber($0)) }
    }

    /// Counters of one hypercall; nil for a number nobody registered.
    public func statistics(for number: HypercallNumber) -> HypercallStatistics? {
        guard let counter = counters[number.rawValue] else { return nil }
        return counter.snapshot(number: number, name: entries[number.rawValue]?.name ?? number.description)
    }

    /// Calls to numbers nobody registered (each returned ENOSYS).
    public var unknownCalls: UInt64 { unknownCounters.calls }
}

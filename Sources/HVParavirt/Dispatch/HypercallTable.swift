import HVCore

/// The set of hypercalls a VM offers: built-in services and the embedding program's own.
/// Built before the dispatcher and fixed once the dispatcher has it, so dispatch reads it
/// without a lock.
public struct HypercallTable: Sendable {
    struct Entry: Sendable {
        let name: String
        let handler: HypercallHandler
        let allowedOnChannel: Bool
    }

    private(set) var entries: [UInt32: Entry] = [:]
    private(set) var stopObservers: [@Sendable () -> Void] = []
    /// What ``HypercallNumber/info`` reports; services add their features and fields.
    public var info = ParavirtInfo()

    /// A table with no hypercalls.
    public init() {}

    /// Adds a handler for `number`. `allowedOnChannel` says whether the shared-memory channel
    /// may run it (calls that block or stop the VM may not).
    public mutating func register(
        _ number: HypercallNumber, name: String, allowedOnChannel: Bool = true, handler: @escaping HypercallHandler
    ) throws(HypercallTableError) {
        guard entries[number.rawValue] == nil else { throw .duplicate(number) }
        guard !HypercallDispatcher.reservedNumbers.contains(number) else { throw .reserved(number) }
        entries[number.rawValue] = Entry(name: name, handler: handler, allowedOnChannel: allowedOnChannel)
    }

    /// Runs `observer` when the VM stops (to end waits inside handlers). Any thread.
    public mutating func onVMStopping(_ observer: @escaping @Sendable () -> Void) {
        stopObservers.append(observer)
    }

    /// The numbers registered, sorted.
    public var numbers: [HypercallNumber] { entries.keys.sorted().map(HypercallNumber.init(rawValue:)) }
}

/// Why a hypercall could not be added to a table.
public enum HypercallTableError: Error, Hashable, Sendable, CustomStringConvertible {
    case duplicate(HypercallNumber)
    case reserved(HypercallNumber)

    /// What was refused, naming the number.
    public var description: String {
        switch self {
        case let .duplicate(number): return "hypercall \(number.rawValue) (\(number)) is already registered"
        case let .reserved(number): return "hypercall \(number.rawValue) (\(number)) belongs to the dispatcher itself"
        }
    }
}

/// A paravirtual service: a group of hypercalls with their state, installed into a table.
public protocol ParavirtService: Sendable {
    func install(into table: inout HypercallTable) throws(HypercallTableError)
}

extension HypercallTable {
    /// Installs a service's hypercalls (``ParavirtService/install(into:)``).
    public mutating func install(_ service: some ParavirtService) throws(HypercallTableError) {
        try service.install(into: &self)
    }
}

extension HypercallTable {
    /// A table with the services every HVKit unikernel guest starts from: the console (its
    /// bytes go to `console`), the clocks, host randomness and the lifecycle calls (exit,
    /// abort). The built-in guests of `GuestImages` need no more; add a service for anything
    /// else the guest calls.
    public static func essentials(console: any ByteSink) throws(HypercallTableError) -> HypercallTable {
        var table = HypercallTable()
        try table.install(ConsoleService(output: console))
        try table.install(ClockService())
        try table.install(RandomService())
        try table.install(LifecycleService())
        return table
    }
}

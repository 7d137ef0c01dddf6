import HVCore

/// The six argument registers of a hypercall (RDI, RSI, RDX, R10, R8, R9), stored inline.
public struct HypercallArguments: Sendable, Hashable {
    public var a0: UInt64, a1: UInt64, a2: UInt64, a3: UInt64, a4: UInt64, a5: UInt64

    /// Arguments `a0` to `a5` (zero where not given).
    public init(_ a0: UInt64 = 0, _ a1: UInt64 = 0, _ a2: UInt64 = 0, _ a3: UInt64 = 0, _ a4: UInt64 = 0, _ a5: UInt64 = 0) {
        (self.a0, self.a1, self.a2, self.a3, self.a4, self.a5) = (a0, a1, a2, a3, a4, a5)
    }

    /// Argument `index` (0 to 5); 0 for any other index.
    public subscript(index: Int) -> UInt64 {
        switch index {
        case 0: return a0
        case 1: return a1
        case 2: return a2
        case 3: return a3
        case 4: return a4
        case 5: return a5
        default: return 0
        }
    }
}

/// How a hypercall reached the dispatcher.
public enum HypercallOrigin: Sendable, Hashable {
    /// A doorbell or `vmcall` exit of this vCPU.
    case trap(vcpu: UInt32)
    /// A request on the shared-memory channel, run during a notify from this vCPU.
    case channel(vcpu: UInt32)
}

/// One hypercall as a handler sees it: its number and arguments, and checked access to the
/// guest memory its arguments point at. Every accessor validates before it touches memory
/// and throws a ``HypercallError`` the guest receives as a negative code.
public struct HypercallCall: Sendable {
    /// Which hypercall.
    public let number: HypercallNumber
    /// Its arguments, as the guest passed them (unchecked).
    public let arguments: HypercallArguments
    /// Where it came from: a vCPU's trap or the shared-memory channel.
    public let origin: HypercallOrigin
    /// The guest memory its arguments point into.
    public let memory: any GuestMemory

    /// A call of `number` with `arguments` from `origin`, over `memory`.
    public init(number: HypercallNumber, arguments: HypercallArguments, origin: HypercallOrigin, memory: any GuestMemory) {
        self.number = number
        self.arguments = arguments
        self.origin = origin
        self.memory = memory
    }

    /// Argument `index` as a guest-physical address.
    public func address(_ index: Int) -> GuestAddress { GuestAddress(arguments[index]) }

    /// Argument `index` as a byte count, refused (E2BIG) above `maximum` and (EINVAL) at 0
    /// unless `allowZero`.
    public func length(_ index: Int, maximum: Int, allowZero: Bool = false) throws(HypercallError) -> Int {
        let value = arguments[index]
        guard value <= UInt64(maximum) else {
            throw HypercallError(.tooBig, "\(number): length \(value) in argument \(index) is over the limit of \(maximum)")
        }
        guard value > 0 || allowZero else { throw HypercallError(.invalid, "\(number): zero length in argument \(index)") }
        return Int(value)
    }

    /// Copies `count` bytes of guest memory at `address` (copied once; the guest cannot change
    /// them under the handler).
    public func readBytes(at address: GuestAddress, count: Int) throws(HypercallError) -> [UInt8] {
        do { return try memory.readBytes(at: address, count: count) } catch { throw .fault(error) }
    }

    /// Copies `bytes` into guest memory at `address`.
    public func writeBytes(_ bytes: [UInt8], to address: GuestAddress) throws(HypercallError) {
        do { try memory.write(bytes, to: address) } catch { throw .fault(error) }
    }

    /// Reads a plain-data argument block at `address` (copied once).
    public func readBlock<Block: BitwiseCopyable>(_ type: Block.Type, at address: GuestAddress) throws(HypercallError) -> Block {
        do { return try memory.read(type, at: address) } catch { throw .fault(error) }
    }

    /// The host buffers behind `[address, address + length)`, for zero-copy I/O; checked as RAM
    /// (writable RAM when `access` is `.write`).
    public func hostBuffers(at address: GuestAddress, length: Int, for access: MemoryAccess) throws(HypercallError) -> [UnsafeMutableRawBufferPointer] {
        do { return unsafe try memory.unsafeHostBuffers(at: address, length: UInt64(length), for: access) } catch { throw .fault(error) }
    }
}

/// What a handler returns.
public enum HypercallResult: Sendable, Hashable {
    /// The value for RAX (non-negative by convention; errors are thrown instead).
    case value(UInt64)
    /// Stop the VM (``HypercallNumber/exit``, ``HypercallNumber/abort``).
    case stop(GuestStopRequest)
    /// Nothing to answer yet (``HypercallNumber/poll``): the vCPU waits off its thread and
    /// the handler is called again when the wait ends (see `TrapWait`). Only for trapped
    /// calls; on the channel it is an error.
    case wait(TrapWait)

    /// A count (bytes, frames) as the result.
    public static func count(_ count: Int) -> HypercallResult { .value(UInt64(count)) }
    /// Success with nothing to return.
    public static let zero = HypercallResult.value(0)
}

/// A hypercall handler. Runs on the calling vCPU's thread; may be called from several vCPUs
/// at once.
public typealias HypercallHandler = @Sendable (HypercallCall) throws(HypercallError) -> HypercallResult

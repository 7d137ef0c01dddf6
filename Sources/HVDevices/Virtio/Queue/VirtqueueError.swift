import HVCore

/// Why one descriptor chain was refused (see ``MalformedChain`` for what happens to it).
public enum ChainError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A `next` field (or an indirect table entry's) names a descriptor past the table.
    case descriptorIndexOutOfRange(index: UInt16, tableSize: UInt32)
    /// The chain visits descriptor `index` twice.
    case descriptorLoop(index: UInt16, indirect: Bool)
    /// An indirect descriptor inside an indirect table.
    case nestedIndirect
    /// A descriptor with both INDIRECT and NEXT set, which the spec forbids.
    case indirectWithNext
    /// An indirect descriptor although VIRTIO_F_INDIRECT_DESC was not negotiated.
    case indirectNotNegotiated
    /// An indirect table whose length is zero, not a multiple of 16, or above the limit.
    case badIndirectTableLength(UInt32)
    /// A device-readable descriptor after a device-writable one.
    case readableAfterWritable(index: UInt16)
    /// The buffers add up to more than 2^32 bytes.
    case chainTooLarge
    /// A buffer (or indirect table) is not entirely guest RAM, or its end overflows.
    case badBuffer(GuestMemoryError)

    /// What the driver got wrong, and where.
    public var description: String {
        switch self {
        case let .descriptorIndexOutOfRange(index, size): "descriptor index \(index) is outside the table of \(size)"
        case let .descriptorLoop(index, indirect): "descriptor \(index)\(indirect ? " of an indirect table" : "") is visited twice (a loop)"
        case .nestedIndirect: "an indirect table contains an indirect descriptor"
        case .indirectWithNext: "a descriptor has both INDIRECT and NEXT set"
        case .indirectNotNegotiated: "an indirect descriptor, but VIRTIO_F_INDIRECT_DESC was not negotiated"
        case let .badIndirectTableLength(length): "indirect table length \(length) is zero, not a multiple of 16, or too large"
        case let .readableAfterWritable(index): "readable descriptor \(index) follows a writable one"
        case .chainTooLarge: "the chain's buffers add up to more than 4 GiB"
        case let .badBuffer(error): "bad buffer: \(error)"
        }
    }
}

/// A chain the queue refused, still in flight: the device reports the error and completes
/// it, or the queue breaks.
///
/// A driver must never read a refused request as a success. Linux's virtio-blk ignores the used
/// length and reads the request's status byte, so completing a bad chain with length zero would
/// leave a stale "OK" there. When the whole chain could be walked (no loop, no index outside the
/// table, no bad indirect table) and its last buffer is writable guest RAM, ``statusByte`` is
/// that buffer's last byte, where a device whose requests end in a status byte writes its error
/// code. Otherwise nothing can carry the error: the queue breaks and the device sets
/// DEVICE_NEEDS_RESET, as the virtio specification recommends (2.1.2) and QEMU does.
public struct MalformedChain: Error, Hashable, Sendable, CustomStringConvertible {
    /// The chain's head: the id to complete it with.
    public let head: UInt16
    /// The first thing wrong with it.
    public let error: ChainError
    /// The last byte of the chain's last buffer, if the chain could be walked to its end and
    /// that buffer is writable guest RAM (checked).
    public let statusByte: GuestAddress?

    /// A refused chain at `head`.
    public init(head: UInt16, error: ChainError, statusByte: GuestAddress?) {
        self.head = head
        self.error = error
        self.statusByte = statusByte
    }

    /// The head and the error, for logs.
    public var description: String { "chain at head \(head) refused: \(error)" }
}

/// What went wrong with a virtqueue.
public enum VirtqueueError: Error, Hashable, Sendable, CustomStringConvertible {
    /// One chain was malformed. It stays in flight until the caller completes it (after
    /// reporting the error in its status byte) or breaks the queue.
    case invalidChain(MalformedChain)
    /// The queue cannot go on; the device should set DEVICE_NEEDS_RESET. Every later call
    /// fails the same way until the queue is reset.
    case broken(QueueFault)
    /// The queue is not ready (not set up, or reset).
    case notReady

    /// Whether the error leaves the queue unusable.
    public var isFatal: Bool {
        if case .invalidChain = self { false } else { true }
    }

    /// What the driver got wrong, and where.
    public var description: String {
        switch self {
        case let .invalidChain(chain): "\(chain)"
        case let .broken(fault): "virtqueue broken: \(fault)"
        case .notReady: "virtqueue is not ready"
        }
    }
}

/// Why a queue broke.
public enum QueueFault: Error, Hashable, Sendable, CustomStringConvertible {
    /// The driver's avail index is more than a queue size ahead of the device's.
    case availableIndexTooFarAhead(available: UInt16, next: UInt16, size: UInt16)
    /// An avail ring entry names a head past the descriptor table.
    case headOutOfRange(head: UInt16, size: UInt16)
    /// A head that is already in flight was made available again.
    case duplicateHead(UInt16)
    /// The device tried to complete a head it does not hold.
    case headNotInFlight(UInt16)
    /// A ring could not be accessed.
    case ringAccess(GuestMemoryError)
    /// The queue's layout is invalid (size or ring placement).
    case invalidLayout(String)
    /// A malformed chain whose error the device had no status byte to report in.
    case malformedChain(MalformedChain)
    /// A well-formed chain carrying a request the device cannot answer (a virtio-blk request
    /// without a writable status byte).
    case unanswerableRequest(head: UInt16, reason: String)

    /// What the driver got wrong, and where.
    public var description: String {
        switch self {
        case let .availableIndexTooFarAhead(available, next, size):
            "avail idx \(available) is more than the queue size \(size) ahead of the device's \(next)"
        case let .headOutOfRange(head, size): "avail ring names head \(head) in a queue of \(size)"
        case let .duplicateHead(head): "head \(head) was made available while still in flight"
        case let .headNotInFlight(head): "head \(head) is not in flight"
        case let .ringAccess(error): "ring access failed: \(error)"
        case let .invalidLayout(reason): "invalid queue layout: \(reason)"
        case let .malformedChain(chain): "\(chain), and it has no status byte to report that in"
        case let .unanswerableRequest(head, reason): "the request at head \(head) cannot be answered: \(reason)"
        }
    }
}

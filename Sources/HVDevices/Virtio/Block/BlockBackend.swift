import HVCore

/// How the host caches a disk's writes, after Firecracker's block caching modes.
public enum BlockCacheMode: String, Sendable, CaseIterable {
    /// Writes go to the host page cache; the device offers VIRTIO_BLK_F_FLUSH and a flush
    /// request calls fdatasync. What Linux guests expect; the default.
    case writeback
    /// Every write is durable before it completes (the file is opened O_DSYNC); flush also
    /// syncs. Slower, for guests that never flush.
    case writethrough
    /// Writes go to the page cache and are never synced: the device offers no FLUSH, and a
    /// flush request from a driver that sends one anyway is answered UNSUPP, so no flush is
    /// ever acknowledged without being durable. A host crash may lose writes. For scratch disks
    /// and benchmarks.
    case unsafe
}

/// The outcome of one block operation, as the virtio-blk status byte reports it.
public enum BlockStatus: UInt8, Sendable {
    case ok = 0
    case ioError = 1
    case unsupported = 2
}

/// Host buffers in guest RAM that one operation reads into or writes from.
///
/// SAFETY: the buffers point into guest memory that the device's ``LockedVirtqueue`` keeps mapped
/// until the request completes, and only the one operation they belong to uses them on the
/// host side; so they may cross to the thread that completes the I/O.
@safe public struct GuestBuffers: @unchecked Sendable {
    /// Host pointers into guest RAM, checked when the request was parsed.
    public let buffers: [UnsafeMutableRawBufferPointer]
    /// The bytes they cover.
    public var byteCount: Int { unsafe buffers.reduce(0) { $0 + $1.count } }
    /// Buffers over `buffers`.
    public init(_ buffers: [UnsafeMutableRawBufferPointer]) { unsafe self.buffers = unsafe buffers }
}

/// One operation on a disk, in bytes. The device has checked every range against the capacity.
public enum BlockOperation: Sendable {
    case read(offset: UInt64, into: GuestBuffers)
    case write(offset: UInt64, from: GuestBuffers)
    case flush
    case discard(offset: UInt64, length: UInt64)
    case writeZeroes(offset: UInt64, length: UInt64, mayUnmap: Bool)
}

/// An operation and the token its completion carries back.
public struct BlockRequest: Sendable {
    /// The device's name for the request, returned with its completion.
    public let token: UInt64
    /// What to do.
    public let operation: BlockOperation
    /// A request `token` for `operation`.
    public init(token: UInt64, operation: BlockOperation) {
        self.token = token
        self.operation = operation
    }
}

/// A finished operation.
public struct BlockCompletion: Hashable, Sendable {
    /// The request's token.
    public let token: UInt64
    /// How it ended.
    public let status: BlockStatus
    /// The completion of request `token` with `status`.
    public init(token: UInt64, status: BlockStatus) {
        self.token = token
        self.status = status
    }
}

/// Receives finished operations (a ``BlockDevice``). Called exactly once per token, from the
/// submitting thread or the backend's completion thread.
public protocol BlockCompletionSink: AnyObject, Sendable {
    func blockOperationsCompleted(_ completions: [BlockCompletion])
}

/// The sink a backend reports to, held weakly so the device and its backend do not keep each
/// other alive. (A protocol, not a stored closure: with Swift 6.3, reading a closure back out of
/// `Locked<Closure?>` with `withLock { $0 }` wraps it in one more reabstraction thunk on every
/// call, so each completion got slower than the last; measured in hv-bench.)
struct WeakCompletionSink {
    weak var sink: (any BlockCompletionSink)?
}

/// Where a virtio-blk device's requests go. ``SyncBlockBackend`` does the I/O on the calling
/// thread; ``AIOBlockBackend`` hands it to Linux AIO and completes it on an event loop.
public protocol BlockBackend: AnyObject, Sendable {
    /// The disk's size in bytes (a multiple of 512).
    var capacity: UInt64 { get }
    /// Whether writes are refused.
    var isReadOnly: Bool { get }
    /// The cache mode, which decides whether the device offers flush.
    var cacheMode: BlockCacheMode { get }
    /// Whether discard and write-zeroes can be offered (the file supports fallocate modes).
    var supportsDiscard: Bool { get }
    /// Where completions go (held weakly); set by the device before the first submit.
    func setCompletionSink(_ sink: any BlockCompletionSink)
    /// Starts `requests`. Each completes exactly once through the completion sink, possibly
    /// before this returns.
    func submit(_ requests: [BlockRequest])
    /// Returns once every submitted request has completed.
    func drain()
}

/// A backend serving one ``DiskImage``: the disk's capacity, read-only flag and cache mode are
/// the backend's, and discard is offered on a writable image (it punches holes).
public protocol DiskImageBackend: BlockBackend {
    /// The image served.
    var disk: DiskImage { get }
}

extension DiskImageBackend {
    /// The image's capacity in bytes.
    public var capacity: UInt64 { disk.capacity }
    /// Whether the image was opened read-only.
    public var isReadOnly: Bool { disk.isReadOnly }
    /// The image's cache mode.
    public var cacheMode: BlockCacheMode { disk.cacheMode }
    /// Discard punches holes in a writable image.
    public var supportsDiscard: Bool { !disk.isReadOnly }
}

extension BlockOperation {
    /// The data bytes the operation moves between guest memory and the disk (what a
    /// bandwidth limit counts): the buffers of a read or write, none otherwise.
    public var dataBytes: UInt64 {
        switch self {
        case let .read(_, buffers), let .write(_, buffers): UInt64(buffers.byteCount)
        default: 0
        }
    }
}

/// What the queueing backends (``AIOBlockBackend``, ``UringBlockBackend``) keep under their
/// one lock: where completions go, how many operations are in the kernel, those waiting for
/// room, and the completions on their way to the device.
protocol QueuedBlockState {
    associatedtype Slot
    var sink: WeakCompletionSink { get set }
    /// Operations in the kernel.
    var inFlightCount: Int { get }
    var backlog: [Slot] { get set }
    /// Completions taken out of flight (or made without it) and not yet handed to the device:
    /// counted as pending, so that drain() (and so a device reset) waits for them.
    var delivering: Int { get set }
}

extension Locked where Value: QueuedBlockState {
    /// Operations in the kernel, waiting for room, or on their way to the device.
    var pendingCount: Int { withLock { $0.inFlightCount + $0.backlog.count + $0.delivering } }

    /// Where completions go (the device).
    func setSink(_ sink: any BlockCompletionSink) {
        withLock { $0.sink.sink = sink }
    }

    /// Hands `completions` to the device, then stops counting them as pending. Every
    /// completion was counted in `delivering` when it was made, under the lock that took it out
    /// of flight, so a drain cannot see zero while one is on its way to the device.
    func deliver(_ completions: [BlockCompletion]) {
        guard !completions.isEmpty else { return }
        withLock { $0.sink.sink }?.blockOperationsCompleted(completions)
        withLock { $0.delivering -= completions.count }
    }
}

/// A batch of requests sorted the way the queueing backends (``AIOBlockBackend``,
/// ``UringBlockBackend``) serve them: transfers and flushes for the kernel, what is answered at
/// once (a write to a read-only disk, a flush in unsafe mode, which is refused rather than
/// acknowledged without being durable), and discards and write-zeroes, which a worker runs.
struct SortedRequests<Queued> {
    /// What a backend does with a flush.
    enum Flush {
        /// Queue it for the kernel.
        case queue(Queued)
        /// It finished here, with this status.
        case done(BlockStatus)
    }

    var queued: [Queued] = []
    var finished: [BlockCompletion] = []
    var offloaded: [(token: UInt64, operation: @Sendable (DiskImage) -> BlockStatus)] = []

    /// Sorts `requests` for `disk`; `transfer` makes the kernel operation of a read (`write`
    /// false) or write, `flush` decides a flush (in modes that sync).
    init(_ requests: [BlockRequest], disk: DiskImage,
         transfer: (_ token: UInt64, _ write: Bool, GuestBuffers, _ offset: UInt64) -> Queued,
         flush: (_ token: UInt64) -> Flush) {
        for request in requests {
            switch request.operation {
            case let .read(offset, buffers):
                queued.append(transfer(request.token, false, buffers, offset))
            case let .write(offset, buffers):
                guard !disk.isReadOnly else {
                    finished.append(BlockCompletion(token: request.token, status: .ioError))
                    continue
                }
                queued.append(transfer(request.token, true, buffers, offset))
            case .flush:
                guard disk.cacheMode != .unsafe else {
                    finished.append(BlockCompletion(token: request.token, status: .unsupported))
                    continue
                }
                switch flush(request.token) {
                case let .queue(operation): queued.append(operation)
                case let .done(status): finished.append(BlockCompletion(token: request.token, status: status))
                }
            case let .discard(offset, length):
                offloaded.append((request.token, { disk in disk.deallocate(offset: offset, length: length, zero: false, mayUnmap: true) }))
            case let .writeZeroes(offset, length, mayUnmap):
                offloaded.append((request.token, { disk in disk.deallocate(offset: offset, length: length, zero: true, mayUnmap: mayUnmap) }))
            }
        }
    }
}

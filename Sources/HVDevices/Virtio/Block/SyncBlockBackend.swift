import Synchronization

/// A ``BlockBackend`` that does each operation with pread/pwrite/fdatasync on the thread that
/// submits it (a vCPU thread, or the event loop when notifications come by ioeventfd). Simple
/// and predictable; one request at a time per queue.
public final class SyncBlockBackend: BlockBackend {
    /// The image served.
    public let disk: DiskImage
    private let sink = Mutex(WeakCompletionSink())

    /// A backend that serves `disk` with blocking calls on the submitting thread.
    public init(disk: DiskImage) {
        self.disk = disk
    }

    /// The image's capacity in bytes.
    public var capacity: UInt64 { disk.capacity }
    /// Whether the image was opened read-only.
    public var isReadOnly: Bool { disk.isReadOnly }
    /// The image's cache mode.
    public var cacheMode: BlockCacheMode { disk.cacheMode }
    /// Discard punches holes in a writable image.
    public var supportsDiscard: Bool { !disk.isReadOnly }

    /// Where completions go (the device).
    public func setCompletionSink(_ sink: any BlockCompletionSink) {
        self.sink.withLock { $0.sink = sink }
    }

    /// Runs `requests` one after another and completes them before returning.
    public func submit(_ requests: [BlockRequest]) {
        let results = requests.map { BlockCompletion(token: $0.token, status: perform($0.operation)) }
        sink.withLock { $0.sink }?.blockOperationsCompleted(results)
    }

    /// Nothing is ever in flight after ``submit(_:)`` returns.
    public func drain() {}

    private func perform(_ operation: BlockOperation) -> BlockStatus {
        switch operation {
        case let .read(offset, buffers):
            return transfer(.read, buffers, offset: offset)
        case let .write(offset, buffers):
            guard !disk.isReadOnly else { return .ioError }
            return transfer(.write, buffers, offset: offset)
        case .flush:
            // Unsafe mode never syncs: a flush is refused, never acknowledged without being durable.
            return disk.cacheMode == .unsafe ? .unsupported : disk.synchronize()
        case let .discard(offset, length):
            return disk.deallocate(offset: offset, length: length, zero: false, mayUnmap: true)
        case let .writeZeroes(offset, length, mayUnmap):
            return disk.deallocate(offset: offset, length: length, zero: true, mayUnmap: mayUnmap)
        }
    }

    private func transfer(_ direction: DiskImage.Direction, _ buffers: GuestBuffers, offset: UInt64) -> BlockStatus {
        var position = offset
        for buffer in buffers.buffers {
            guard disk.positionalIO(direction, buffer, offset: position) else { return .ioError }
            position += UInt64(buffer.count)
        }
        return .ok
    }
}

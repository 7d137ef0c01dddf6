import Synchronization

/// A ``BlockBackend`` that does each operation with pread/pwrite/fdatasync on the thread that
/// submits it (a vCPU thread, or the event loop when notifications come by ioeventfd). Simple
/// and predictable; one request at a time per queue.
public final class SyncBlockBackend: BlockBackend {
    public let disk: DiskImage
    private let sink = Mutex(WeakCompletionSink())

    public init(disk: DiskImage) {
        self.disk = disk
    }

    public var capacity: UInt64 { disk.capacity }
    public var isReadOnly: Bool { disk.isReadOnly }
    public var cacheMode: BlockCacheMode { disk.cacheMode }
    public var supportsDiscard: Bool { !disk.isReadOnly }

    public func setCompletionSink(_ sink: any BlockCompletionSink) {
        self.sink.withLock { $0.sink = sink }
    }

    public func submit(_ requests: [BlockRequest]) {
        let results = requests.map { BlockCompletion(token: $0.token, status: perform($0.operation)) }
        sink.withLock { $0.sink }?.blockOperationsCompleted(results)
    }

    public func drain() {}

    private func perform(_ operation: BlockOperation) -> BlockStatus {
        switch operation {
        case let .read(offset, buffers):
            return transfer(.read, buffers, offset: offset)
        case let .write(offset, buffers):
            guard !disk.isReadOnly else { return .ioError }
            return transfer(.write, buffers, offset: offset)
        case .flush:
            return disk.cacheMode == .unsafe ? .ok : disk.synchronize()
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

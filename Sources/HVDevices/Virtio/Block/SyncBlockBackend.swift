import Glibc
import HVCore
import Synchronization

/// A ``BlockBackend`` that does each read, write and flush with pread/pwrite/fdatasync on the
/// thread that submits it (a vCPU thread, or the event loop when notifications come by
/// ioeventfd), completing it before ``submit(_:)`` returns. Simple and predictable; one request
/// at a time per queue. Discard and write-zeroes, which on a file system without a zero-range
/// fallocate write every zero (up to 32 MiB a request), run on a worker thread of the
/// backend's own instead, so that they cannot hold a thread vCPUs or other devices share.
public final class SyncBlockBackend: DiskImageBackend {
    /// The image served.
    public let disk: DiskImage
    private let sink = Locked(WeakCompletionSink())
    private let offload = OffloadWorker(name: "hv-blk-offload")
    /// Offloaded operations not yet delivered to the device.
    private let offloaded = Atomic<Int>(0)

    /// A backend that serves `disk` with blocking calls on the submitting thread.
    public init(disk: DiskImage) {
        self.disk = disk
    }

    /// Where completions go (the device).
    public func setCompletionSink(_ sink: any BlockCompletionSink) {
        self.sink.withLock { $0.sink = sink }
    }

    deinit {
        offload.shutdown()
    }

    /// Runs `requests` one after another and completes them before returning; discards and
    /// write-zeroes go to the worker thread and complete from there.
    public func submit(_ requests: [BlockRequest]) {
        var results: [BlockCompletion] = []
        results.reserveCapacity(requests.count)
        for request in requests {
            switch request.operation {
            case .discard, .writeZeroes:
                offloaded.add(1, ordering: .relaxed)
                let operation = request.operation
                // The job holds the backend until it has delivered (a weak reference would
                // need a side table LeakSanitizer cannot follow); should it hold the last
                // reference, deinit runs on the worker, which then ends by itself.
                offload.run { [self] in
                    let status = Self.perform(operation, on: disk)
                    sink.withLock { $0.sink }?.blockOperationsCompleted([BlockCompletion(token: request.token, status: status)])
                    offloaded.subtract(1, ordering: .releasing)
                }
            default:
                results.append(BlockCompletion(token: request.token, status: Self.perform(request.operation, on: disk)))
            }
        }
        if !results.isEmpty { sink.withLock { $0.sink }?.blockOperationsCompleted(results) }
    }

    /// Waits until the offloaded discards and write-zeroes have been delivered; everything
    /// else completed inside ``submit(_:)``.
    public func drain() {
        while offloaded.load(ordering: .acquiring) > 0 {
            var pause = timespec(tv_sec: 0, tv_nsec: 200_000)
            unsafe nanosleep(&pause, nil)
        }
    }

    private static func perform(_ operation: BlockOperation, on disk: DiskImage) -> BlockStatus {
        switch operation {
        case let .read(offset, buffers):
            return transfer(.read, buffers, offset: offset, on: disk)
        case let .write(offset, buffers):
            guard !disk.isReadOnly else { return .ioError }
            return transfer(.write, buffers, offset: offset, on: disk)
        case .flush:
            // Unsafe mode never syncs: a flush is refused, never acknowledged without being durable.
            return disk.cacheMode == .unsafe ? .unsupported : disk.synchronize()
        case let .discard(offset, length):
            return disk.deallocate(offset: offset, length: length, zero: false, mayUnmap: true)
        case let .writeZeroes(offset, length, mayUnmap):
            return disk.deallocate(offset: offset, length: length, zero: true, mayUnmap: mayUnmap)
        }
    }

    private static func transfer(_ direction: DiskImage.Direction, _ buffers: GuestBuffers, offset: UInt64, on disk: DiskImage) -> BlockStatus {
        var position = offset
        for unsafe buffer in unsafe buffers.buffers {
            guard unsafe disk.positionalIO(direction, buffer, offset: position) else { return .ioError }
            position += UInt64(buffer.count)
        }
        return .ok
    }
}

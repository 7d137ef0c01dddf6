import Glibc
import HVCore
import HVDevices
import HVDevicesTesting
import Synchronization
import Testing

/// What both block backends promise a device.
@Suite("Block backends")
struct BlockBackendTests {
    /// A write-zeroes of the largest size the device accepts (32 MiB), and a discard, run on
    /// the backend's own worker thread, not on the thread that submitted them (a vCPU or the
    /// event loop that others share). Both still reach the file, and drain waits for them.
    @Test(arguments: BackendKind.allCases, [false, true])
    func zeroingRunsOffTheSubmittingThread(kind: BackendKind, discard: Bool) throws {
        let size = 40 << 20
        let file = try ScratchFile(size: size, contents: [(0, [UInt8](repeating: 0xA5, count: size))])
        let events = try EventLoop(name: "zero-test")
        defer { events.shutdown() }
        let disk = try DiskImage(path: file.path)
        let backend: any BlockBackend = switch kind {
        case .sync: SyncBlockBackend(disk: disk)
        case .aio: try AIOBlockBackend(disk: disk, eventLoop: events, depth: 8)
        case .uring: try UringBlockBackend(disk: disk, eventLoop: events, depth: 8)
        }
        let sink = ThreadRecordingSink()
        backend.setCompletionSink(sink)
        let length: UInt64 = 32 << 20
        let operation: BlockOperation = discard
            ? .discard(offset: 4096, length: length)
            : .writeZeroes(offset: 4096, length: length, mayUnmap: false)
        backend.submit([BlockRequest(token: 7, operation: operation)])
        backend.drain()
        let deliveries = sink.deliveries.withLock { $0 }
        #expect(deliveries.count == 1 && deliveries.first?.status == .ok)
        #expect(deliveries.first.map { pthread_equal($0.thread, pthread_self()) == 0 } == true)
        #expect(try file.read(at: 4096, count: 8192).allSatisfy { $0 == 0 })
        #expect(try file.read(at: 0, count: 4096).allSatisfy { $0 == 0xA5 })
    }
}

/// Records the thread each completion arrives on.
private final class ThreadRecordingSink: BlockCompletionSink {
    let deliveries = Locked<[(status: BlockStatus, thread: pthread_t)]>([])
    func blockOperationsCompleted(_ completions: [BlockCompletion]) {
        let thread = pthread_self()
        deliveries.withLock { $0 += completions.map { ($0.status, thread) } }
    }
}

/// A completion sink that takes its time, as a device writing used entries under load does.
private final class SlowSink: BlockCompletionSink {
    let delivered = Atomic<Int>(0)
    func blockOperationsCompleted(_ completions: [BlockCompletion]) {
        var pause = timespec(tv_sec: 0, tv_nsec: 100_000_000)
        nanosleep(&pause, nil)
        delivered.add(completions.count, ordering: .releasing)
    }
}

extension BlockBackendTests {
    /// An AIO or an io_uring backend (`kind` is one of them) on `disk`.
    static func queueingBackend(_ kind: BackendKind, disk: DiskImage, eventLoop: EventLoop, depth: Int) throws -> any QueueingBackend {
        kind == .aio
            ? try AIOBlockBackend(disk: disk, eventLoop: eventLoop, depth: depth)
            : try UringBlockBackend(disk: disk, eventLoop: eventLoop, depth: depth)
    }

    /// drain() (what a device reset waits on) must not return while completions are still on
    /// their way to the device: they were once taken out of flight before delivery, so a reset
    /// could return while a completion still wrote a used entry into a re-initialised ring.
    @Test(arguments: [BackendKind.aio, .uring])
    func drainWaitsForCompletionsBeingDelivered(kind: BackendKind) throws {
        let file = try ScratchFile(size: 32 * 4096)
        let events = try EventLoop(name: "drain-test")
        defer { events.shutdown() }
        let disk = try DiskImage(path: file.path)
        let backend = try Self.queueingBackend(kind, disk: disk, eventLoop: events, depth: 64)
        let sink = SlowSink()
        backend.setCompletionSink(sink)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 32 * 4096, alignment: 4096)
        defer { buffer.deallocate() }
        var requests: [BlockRequest] = []
        for index in 0..<32 {
            let start = index * 4096
            let slice = UnsafeMutableRawBufferPointer(rebasing: buffer[start..<(start + 4096)])
            let offset = UInt64(start)
            requests.append(BlockRequest(token: UInt64(index), operation: .read(offset: offset, into: GuestBuffers([slice]))))
        }
        // The reads finish in the page cache and are delivered (slowly) on the submitting
        // thread or the event loop; meanwhile another thread drains.
        let batch = requests
        let submitter = try HostThread(name: "drain-submit") { backend.submit(batch) }
        // Drain only once the submission is under way: a drain that runs before it has nothing
        // to wait for, and under a sanitizer the submitting thread may take long to start.
        var waited = 0
        while backend.pendingCount == 0 && sink.delivered.load(ordering: .acquiring) == 0 && waited < 2_000 {
            var pause = timespec(tv_sec: 0, tv_nsec: 5_000_000)
            nanosleep(&pause, nil)
            waited += 1
        }
        backend.drain()
        #expect(sink.delivered.load(ordering: .acquiring) == 32, "drain returned before every completion reached the device")
        #expect(backend.pendingCount == 0)
        submitter.join()
    }
}

/// The two backends that keep requests in flight, and count them.
protocol QueueingBackend: BlockBackend {
    var pendingCount: Int { get }
}

extension AIOBlockBackend: QueueingBackend {}
extension UringBlockBackend: QueueingBackend {}

/// Whether files in /var/tmp (where ScratchFile makes them) can be opened with O_DIRECT.
private let directIOAvailable: Bool = {
    guard let file = try? ScratchFile(size: 4096) else { return false }
    return (try? DiskImage(path: file.path, direct: true)) != nil
}()

extension BlockBackendTests {
    /// Reads and writes through O_DIRECT (the disk, not the page cache, with aligned buffers)
    /// land where they should, and a flush after them succeeds. With O_DIRECT the kernel
    /// completes them later, so their completions come through the eventfd (AIO) or the
    /// ring's (io_uring), not at submission as buffered I/O's do.
    @Test(.enabled(if: directIOAvailable, "O_DIRECT is not available in /var/tmp"), arguments: [BackendKind.aio, .uring])
    func directReadsAndWritesAreExact(kind: BackendKind) throws {
        let file = try ScratchFile(size: 64 * 4096) { UInt8(truncatingIfNeeded: $0 / 4096 &* 3 &+ $0) }
        let expected = try file.read(at: 0, count: 64 * 4096)
        let events = try EventLoop(name: "direct-test")
        defer { events.shutdown() }
        let disk = try DiskImage(path: file.path, direct: true)
        let backend = try Self.queueingBackend(kind, disk: disk, eventLoop: events, depth: 16)
        let sink = ThreadRecordingSink()
        backend.setCompletionSink(sink)
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 4096, alignment: 4096)
        defer { memory.deallocate() }
        let buffers = (0..<64).map { GuestBuffers([UnsafeMutableRawBufferPointer(rebasing: memory[($0 * 4096)..<(($0 + 1) * 4096)])]) }
        backend.submit(buffers.enumerated().map { BlockRequest(token: UInt64($0), operation: .read(offset: UInt64($0) * 4096, into: $1)) })
        backend.drain()
        #expect(sink.deliveries.withLock { $0.count == 64 && $0.allSatisfy { $0.status == .ok } })
        #expect(Array(memory) == expected)

        for index in memory.indices { memory[index] = UInt8(truncatingIfNeeded: index &* 7) }
        backend.submit(buffers.enumerated().map { BlockRequest(token: 100 + UInt64($0), operation: .write(offset: UInt64($0) * 4096, from: $1)) }
            + [BlockRequest(token: 999, operation: .flush)])
        backend.drain()
        #expect(sink.deliveries.withLock { $0.count == 64 + 65 && $0.allSatisfy { $0.status == .ok } })
        #expect(try file.read(at: 0, count: 64 * 4096) == Array(memory))
    }
}

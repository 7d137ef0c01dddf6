import Glibc
import HVCore
import HVDevices
import HVDevicesTesting
import Testing

/// What both block backends promise a device.
@Suite("Block backends")
struct BlockBackendTests {
    /// A write-zeroes of the largest size the device accepts (32 MiB), and a discard, run on
    /// the backend's own worker thread, not on the thread that submitted them (a vCPU or the
    /// event loop that others share). Both still reach the file, and drain waits for them.
    @Test(arguments: [BackendKind.sync, .aio], [false, true])
    func zeroingRunsOffTheSubmittingThread(kind: BackendKind, discard: Bool) throws {
        let size = 40 << 20
        let file = try ScratchFile(size: size, contents: [(0, [UInt8](repeating: 0xA5, count: size))])
        let events = try EventLoop(name: "zero-test")
        defer { events.shutdown() }
        let disk = try DiskImage(path: file.path)
        let backend: any BlockBackend = kind == .sync ? SyncBlockBackend(disk: disk) : try AIOBlockBackend(disk: disk, eventLoop: events, depth: 8)
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

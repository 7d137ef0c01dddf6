import Glibc
import HVCore
import HVDevices
import HVDevicesTesting
import Synchronization
import Testing

/// A completion sink that takes its time, as a device writing used entries under load does.
private final class SlowSink: BlockCompletionSink {
    let delivered = Atomic<Int>(0)
    func blockOperationsCompleted(_ completions: [BlockCompletion]) {
        var pause = timespec(tv_sec: 0, tv_nsec: 100_000_000)
        nanosleep(&pause, nil)
        delivered.add(completions.count, ordering: .releasing)
    }
}

@Suite("AIO block backend")
struct AIOBlockBackendTests {
    /// drain() (what a device reset waits on) must not return while completions are still on
    /// their way to the device: they were once taken out of flight before delivery, so a reset
    /// could return while a completion still wrote a used entry into a re-initialised ring.
    @Test func drainWaitsForCompletionsBeingDelivered() throws {
        let file = try ScratchFile(size: 32 * 4096)
        let events = try EventLoop(name: "aio-drain-test")
        defer { events.shutdown() }
        let backend = try AIOBlockBackend(disk: try DiskImage(path: file.path), eventLoop: events, depth: 64)
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
        let submitter = try HostThread(name: "aio-submit") { backend.submit(batch) }
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

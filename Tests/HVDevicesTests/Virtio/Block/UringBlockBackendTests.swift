import Glibc
import HVCore
@testable import HVDevices
import HVDevicesTesting
import Synchronization
import SystemPackage
import Testing

/// Records each completion and the thread it came on.
private final class RecordingSink: BlockCompletionSink {
    let completions = Locked<[BlockCompletion]>([])
    func blockOperationsCompleted(_ batch: [BlockCompletion]) { completions.withLock { $0 += batch } }
}

@Suite("io_uring block backend")
struct UringBlockBackendTests {
    func buffers(_ count: Int, size: Int) -> (UnsafeMutableRawBufferPointer, [GuestBuffers]) {
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: count * size, alignment: 4096)
        return (memory, (0..<count).map { index in
            GuestBuffers([UnsafeMutableRawBufferPointer(rebasing: memory[(index * size)..<((index + 1) * size)])])
        })
    }

    /// io_uring runs operations outside the caller's seccomp filter: the ring allows only
    /// reads, writes and syncs of its one registered file, so anything else is refused.
    @Test func theRingRefusesEveryOperationButItsOwn() throws {
        let file = try ScratchFile(size: 4096)
        let events = try EventLoop(name: "uring-restrict")
        defer { events.shutdown() }
        let backend = try UringBlockBackend(disk: try DiskImage(path: file.path), eventLoop: events, depth: 8)
        #expect(backend.submitForbiddenOperation() == -EACCES)
    }

    /// More requests than the ring holds wait in the backlog and all complete; a read past the
    /// file's end (which the device would have refused) comes back short, as an I/O error.
    @Test func aBacklogBeyondTheRingCompletesAndShortReadsFail() throws {
        let file = try ScratchFile(size: 256 * 512) { UInt8(truncatingIfNeeded: $0) }
        let events = try EventLoop(name: "uring-backlog")
        defer { events.shutdown() }
        let backend = try UringBlockBackend(disk: try DiskImage(path: file.path), eventLoop: events, depth: 4)
        #expect(backend.depth == 4)
        let sink = RecordingSink()
        backend.setCompletionSink(sink)
        let (memory, reads) = buffers(257, size: 512)
        defer { memory.deallocate() }
        backend.submit(reads.enumerated().map { BlockRequest(token: UInt64($0), operation: .read(offset: UInt64($0) * 512, into: $1)) })
        backend.drain()
        let completions = sink.completions.withLock { $0 }.sorted { $0.token < $1.token }
        #expect(completions.map(\.token) == Array(0...256))
        #expect(completions.dropLast().allSatisfy { $0.status == .ok })
        #expect(completions.last?.status == .ioError)
        #expect(Array(memory[..<(256 * 512)]) == (try file.read(at: 0, count: 256 * 512)))
        #expect(backend.pendingCount == 0)
    }

    /// A host that disables io_uring, a kernel without it or too old for what the backend
    /// needs: each refused with the reason and what to use instead.
    @Test func setupFailuresSayWhy() {
        guard case .disabled = UringBlockBackend.setupError(step: 0, errno: .notPermitted) else {
            Issue.record("EPERM from io_uring_setup is not reported as disabled")
            return
        }
        #expect("\(UringBlockBackend.setupError(step: 0, errno: .notPermitted))".contains("kernel.io_uring_disabled"))
        #expect("\(UringBlockBackend.setupError(step: 0, errno: .noFunction))".contains("no io_uring"))
        #expect("\(UringBlockBackend.setupError(step: 0, errno: .notSupported))".contains("5.11"))
        #expect("\(UringBlockBackend.setupError(step: 4, errno: .invalidArgument))".contains("5.10"))
        #expect("\(UringBlockBackend.setupError(step: 0, errno: .invalidArgument))".contains("5.10"))
        #expect("\(UringBlockBackend.setupError(step: 2, errno: .badFileDescriptor))".contains("registering the disk"))
        #expect("\(UringBlockBackend.setupError(step: 0, errno: .notPermitted))".contains("engine aio or sync"))
    }

    /// A ring the kernel stops accepting (here its descriptor replaced by an eventfd, so
    /// io_uring_enter fails with something other than "busy"): the queued requests are
    /// withdrawn and fail as I/O errors instead of waiting forever, and drain returns.
    @Test func requestsARingCannotTakeFailInsteadOfWaiting() throws {
        let file = try ScratchFile(size: 16 * 512)
        let events = try EventLoop(name: "uring-broken")
        defer { events.shutdown() }
        let backend = try UringBlockBackend(disk: try DiskImage(path: file.path), eventLoop: events, depth: 8)
        let sink = RecordingSink()
        backend.setCompletionSink(sink)
        let impostor = try EventFD(nonBlocking: true)
        #expect(dup2(impostor.fileDescriptor.rawValue, backend.ringDescriptor) == backend.ringDescriptor)
        let (memory, reads) = buffers(4, size: 512)
        defer { memory.deallocate() }
        backend.submit(reads.enumerated().map { BlockRequest(token: UInt64($0), operation: .read(offset: UInt64($0) * 512, into: $1)) })
        backend.drain()
        #expect(sink.completions.withLock { $0.map(\.status) } == [BlockStatus](repeating: .ioError, count: 4))
        #expect(backend.pendingCount == 0)
    }
}

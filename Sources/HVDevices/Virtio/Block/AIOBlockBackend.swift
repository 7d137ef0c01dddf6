import CLibAIO
import Glibc
import HVCore
import Logging
import SystemPackage

/// Why a Linux AIO backend could not be set up.
public enum AIOBackendError: Error, Hashable, Sendable, CustomStringConvertible {
    case setup(Errno)
    case eventFD(Errno)

    /// What failed, with the system's error.
    public var description: String {
        switch self {
        case let .setup(errno): "io_setup failed: \(errno)"
        case let .eventFD(errno): "cannot create or watch the completion eventfd: \(errno)"
        }
    }
}

/// A ``BlockBackend`` on Linux native AIO (libaio): reads, writes and flushes are submitted with
/// io_submit straight from and into guest RAM, many in flight at once, and their completions
/// arrive on an eventfd that an `EventLoop` serves, so the submitting vCPU never waits for
/// the disk. On a disk opened without O_DIRECT the kernel does a read or write inside
/// io_submit (only direct I/O is asynchronous, fs/aio.c), so those carry no eventfd: the
/// submitting thread reaps them at once, and the event loop's thread is not woken for each
/// (that wake-up cost as much as 40% of a 64 KiB read's copy). Discard and write-zeroes
/// (which AIO has no operation for) run on a worker thread of the backend's own, started on
/// first use: fallocate, or where the file system has no zero-range fallocate, writing the
/// zeros, which must not hold a thread that vCPUs or other devices share. If the file system
/// refuses an AIO fdatasync, flushes fall back to fdatasync on the submitting thread.
public final class AIOBlockBackend: DiskImageBackend {
    /// The image served.
    public let disk: DiskImage
    /// The most operations in flight in the kernel; more wait in a backlog.
    public let depth: Int

    private struct State: QueuedBlockState {
        var sink = WeakCompletionSink()
        /// The operations in the kernel, found by the iocb address their completion names.
        var table: AIOControlTable
        var backlog: [AIOOperation] = []
        var delivering = 0
        var fdsyncUnsupported = false
        /// Operations that signal no eventfd (buffered reads and writes) which io_submit took,
        /// so that they are complete, and nobody reaped yet: whoever sees one reaps it, and
        /// waits for nothing still running. Counted up after io_submit returns and down when
        /// reaped, so it is below zero for a moment when another thread reaps one first.
        var quietUnreaped = 0
        var inFlightCount: Int { table.count }

        /// Takes `control`'s operation out of flight: one the kernel completed, or (not
        /// `submitted`) one it never took.
        mutating func remove(_ control: UnsafeMutablePointer<iocb>, submitted: Bool = true) -> AIOControlTable.Entry? {
            guard let entry = unsafe table.remove(control) else { return nil }
            if submitted, !entry.signals { quietUnreaped -= 1 }
            return entry
        }
    }

    /// SAFETY: an AIO context is a kernel handle; io_submit and io_getevents may be called on
    /// it from several threads at once.
    @safe private struct Context: @unchecked Sendable { let raw: io_context_t }

    private let aio: Context
    private var context: io_context_t { unsafe aio.raw }
    private let completions: EventFD
    private let loop: EventLoop
    private let registration: EventLoop.Registration
    private let state: Locked<State>
    private let offload = OffloadWorker(name: "hv-blk-offload")
    private let logger: Logger

    /// - Parameters:
    ///   - disk: the opened disk.
    ///   - eventLoop: where completions are reaped.
    ///   - depth: the AIO context size; a virtio queue's size is a natural choice.
    ///   - logger: where the backend logs I/O errors.
    public init(disk: DiskImage, eventLoop: EventLoop, depth: Int = 256,
                logger: Logger = Logger(label: "hvkit.virtio-blk.aio")) throws(AIOBackendError) {
        self.disk = disk
        self.depth = max(depth, 1)
        state = Locked(State(table: AIOControlTable(capacity: self.depth)))
        self.loop = eventLoop
        self.logger = logger
        var context: io_context_t?
        let result = unsafe io_setup(Int32(self.depth), &context)
        guard result == 0, let context = unsafe context else { throw .setup(Errno(rawValue: -result)) }
        aio = unsafe Context(raw: context)
        do {
            completions = try EventFD(nonBlocking: true)
        } catch {
            unsafe io_destroy(context)
            throw .eventFD(error)
        }
        // Capture the pieces, not self: the loop's handler must not keep the backend alive.
        let reaper = Reaper()
        do {
            registration = try eventLoop.register(completions.fileDescriptor) { reaper.backend?.reapAvailable() }
        } catch {
            unsafe io_destroy(context)
            throw .eventFD(error)
        }
        reaper.backend = self
    }

    deinit {
        loop.unregister(registration)
        // Offloaded jobs hold the backend until they have delivered, so none is left here (or
        // this runs on the worker, after the last one, and the worker ends by itself).
        offload.shutdown()
        drain()
        unsafe io_destroy(context)
        // The kernel reads iocbs and iovecs until the context is gone.
        state.withLock { $0.table.deallocate() }
    }

    /// Operations submitted to the kernel and not yet reaped, plus the backlog and those being delivered.
    public var pendingCount: Int { state.pendingCount }

    /// Where completions go (the device).
    public func setCompletionSink(_ sink: any BlockCompletionSink) { state.setSink(sink) }

    /// Submits `requests` with io_submit (up to ``depth`` in flight, the rest queued); completions arrive on the event loop or, when they finished at once, on this thread.
    public func submit(_ requests: [BlockRequest]) {
        let fdsyncUnsupported = state.withLock { $0.fdsyncUnsupported }
        let sorted = SortedRequests<AIOOperation>(requests, disk: disk, transfer: { token, write, buffers, offset in
            AIOOperation.transfer(token, write: write, buffers, offset: offset)
        }, flush: { token in
            fdsyncUnsupported ? .done(disk.synchronize()) : .queue(AIOOperation.flush(token))
        })
        var finished = sorted.finished
        let (prepared, offloaded) = (sorted.queued, sorted.offloaded)
        state.withLock { state in
            state.backlog.append(contentsOf: prepared)
            // Offloaded operations count as on their way to the device until delivered.
            state.delivering += finished.count + offloaded.count
        }
        for (token, operation) in offloaded {
            offload.run { [self] in state.deliver([BlockCompletion(token: token, status: operation(disk))]) }
        }
        finished += submitBacklog()
        state.deliver(finished)
        // Buffered I/O often completes inside io_submit: reap it here rather than hand it to
        // the event loop's thread (a wake-up and a lock hand-off per batch).
        if !prepared.isEmpty { reap(minimum: 0, timeoutNanoseconds: 0) }
    }

    /// Waits until every submitted request has completed and been delivered.
    public func drain() {
        while pendingCount > 0 {
            state.deliver(submitBacklog())
            reap(minimum: 1, timeoutNanoseconds: 10_000_000)
        }
    }

    // MARK: Submission

    /// Whether `operation`'s completion signals the eventfd. Buffered I/O completes inside
    /// io_submit, whose caller reaps it; an AIO fdatasync runs on a kernel worker and direct
    /// I/O in the device, so those complete later and signal.
    private func signals(_ operation: AIOOperation) -> Bool {
        operation.kind == .flush || disk.isDirect
    }

    /// Moves what fits from the backlog into flight under the lock, then calls io_submit
    /// outside it (for buffered files io_submit does the copy itself, and the completion
    /// thread must not wait for that). Returns operations the kernel refused, completed here.
    private func submitBacklog() -> [BlockCompletion] {
        var failed: [BlockCompletion] = []
        // A batch's iocb addresses, as io_submit takes them, and which of them signal: on the
        // stack, as this runs after every submission and completion.
        unsafe withUnsafeTemporaryAllocation(of: UnsafeMutablePointer<iocb>?.self, capacity: 64) { controls in
            unsafe withUnsafeTemporaryAllocation(of: Bool.self, capacity: 64) { signalling in
                while unsafe submitBatch(controls, signalling, failed: &failed) {}
            }
        }
        return failed
    }

    /// Moves up to a batch from the backlog into flight and submits it; false once there is
    /// nothing to move or the kernel is full (the rest waits for completions to submit it).
    private func submitBatch(_ controls: UnsafeMutableBufferPointer<UnsafeMutablePointer<iocb>?>,
                             _ signalling: UnsafeMutableBufferPointer<Bool>, failed: inout [BlockCompletion]) -> Bool {
        let taken = state.withLock { state in
            let room = min(depth - state.table.count, state.backlog.count, controls.count)
            var taken = 0
            // Recorded before io_submit: a completion may be reaped before it returns.
            while taken < room {
                let operation = state.backlog[taken]
                let signals = signals(operation)
                guard let control = unsafe state.table.insert(operation, file: disk.fileDescriptor.rawValue,
                                                              eventFD: completions.fileDescriptor.rawValue, signals: signals) else { break }
                unsafe controls[taken] = unsafe control
                unsafe signalling[taken] = signals
                taken += 1
            }
            state.backlog.removeFirst(taken)
            return taken
        }
        guard taken > 0, let first = controls.baseAddress else { return false }
        var submitted = 0
        while submitted < taken {
            let result = unsafe io_submit(context, taken - submitted, first + submitted)
            if result > 0 {
                let quiet = unsafe signalling[submitted..<(submitted + Int(result))].count { !$0 }
                if quiet > 0 { state.withLock { $0.quietUnreaped += quiet } }
                submitted += Int(result)
                continue
            }
            if result == -EINTR { continue }
            if result == -EAGAIN {
                // The kernel is full: the rest waits, and completions submit it later.
                state.withLock { state in
                    let rest = unsafe controls[submitted..<taken].compactMap { unsafe $0.flatMap { unsafe state.remove($0, submitted: false) } }
                    state.backlog.insert(contentsOf: rest.map(\.operation), at: 0)
                }
                return false
            }
            // The first remaining operation was refused; complete it and go on.
            guard let control = unsafe controls[submitted] else { return false }
            submitted += 1
            let refused = state.withLock { state -> AIOOperation? in
                guard let operation = unsafe state.remove(control, submitted: false)?.operation else { return nil }
                // Counted until delivered below, with the others this call returns.
                state.delivering += 1
                if operation.kind == .flush, result == -EINVAL { state.fdsyncUnsupported = true }
                return operation
            }
            guard let operation = refused else { continue }
            if operation.kind == .flush, result == -EINVAL {
                logger.info("AIO fdatasync unsupported on \(disk.path); flushing synchronously")
                failed.append(BlockCompletion(token: operation.token, status: disk.synchronize()))
            } else {
                logger.error("io_submit failed", metadata: ["errno": "\(Errno(rawValue: -result))"])
                failed.append(BlockCompletion(token: operation.token, status: .ioError))
            }
        }
        return true
    }

    // MARK: Completion

    private final class Reaper: @unchecked Sendable {
        // Written once in init before the loop can call the handler.
        weak var backend: AIOBlockBackend?
    }

    private func reapAvailable() {
        _ = try? completions.consume()
        reap(minimum: 0, timeoutNanoseconds: 0)
    }

    private func reap(minimum: Int, timeoutNanoseconds: Int) {
        // On the stack: this runs after every submit and every completion wake-up, and
        // io_getevents fills only the entries it reports.
        unsafe withUnsafeTemporaryAllocation(of: io_event.self, capacity: 64) { events in
            var (minimum, timeoutNanoseconds) = (minimum, timeoutNanoseconds)
            while true {
                var timeout = timespec(tv_sec: 0, tv_nsec: timeoutNanoseconds)
                let count = unsafe io_getevents(context, minimum, events.count, events.baseAddress, &timeout)
                if count == -EINTR { continue }
                guard count > 0 else {
                    // Quiet operations wake nobody, so whoever finds one unreaped reaps it.
                    // It completed inside io_submit: its event is there, unless another
                    // thread is taking it this moment (then the count drops to zero).
                    guard count == 0, state.withLock({ $0.quietUnreaped }) > 0 else { return }
                    (minimum, timeoutNanoseconds) = (1, 1_000_000)
                    continue
                }
                minimum = 0
                var finished: [BlockCompletion] = []
                state.withLock { state in
                    for unsafe event in unsafe events[..<Int(count)] {
                        guard let control = unsafe event.obj,
                              let operation = unsafe state.remove(control)?.operation else { continue }
                        let result = unsafe Int(bitPattern: UInt(event.res))
                        let status: BlockStatus = result == operation.expectedBytes ? .ok : .ioError
                        if status != .ok {
                            logger.warning("AIO operation failed", metadata: ["result": "\(result)", "expected": "\(operation.expectedBytes)"])
                        }
                        finished.append(BlockCompletion(token: operation.token, status: status))
                    }
                    state.delivering += finished.count
                }
                finished += submitBacklog()
                state.deliver(finished)
                if count < events.count, state.withLock({ $0.quietUnreaped }) <= 0 { return }
                timeoutNanoseconds = 0
            }
        }
    }
}

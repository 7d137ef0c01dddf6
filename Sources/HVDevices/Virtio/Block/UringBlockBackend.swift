import CHVDevicesShims
import Glibc
import HVCore
import Logging
import SystemPackage

/// Why an io_uring backend could not be set up.
public enum UringBackendError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The host switched io_uring off: `kernel.io_uring_disabled` (its value, when readable)
    /// refuses it to this process (EPERM).
    case disabled(sysctl: Int?)
    /// The kernel has no io_uring (ENOSYS), or lacks what the backend needs: timed waits
    /// (Linux 5.11) or ring restrictions (5.10).
    case unsupported(String)
    /// A step of the setup failed.
    case setup(step: String, Errno)
    /// The completion eventfd could not be made or watched.
    case eventFD(Errno)

    /// What failed, with the reason.
    public var description: String {
        switch self {
        case let .disabled(sysctl):
            return "io_uring is disabled on this host (kernel.io_uring_disabled = \(sysctl.map(String.init) ?? "?")); use engine aio or sync"
        case let .unsupported(reason): return "io_uring cannot be used here: \(reason); use engine aio or sync"
        case let .setup(step, errno): return "io_uring setup failed at \(step): \(errno)"
        case let .eventFD(errno): return "cannot create or watch the io_uring completion eventfd: \(errno)"
        }
    }
}

/// A ``BlockBackend`` on io_uring, through its system calls (no liburing): reads, writes and
/// flushes (`IORING_OP_FSYNC` with DATASYNC) go straight from and into guest RAM, many in flight
/// at once. The thread that submits also reaps what completed while it submitted (page-cache
/// hits complete inside `io_uring_enter`), with the ring's eventfd quiet meanwhile, so those
/// need no hand-off and wake no other thread; what completes later signals the eventfd, which
/// an `EventLoop` serves. Discard and write-zeroes run on a worker of
/// the backend's own, as with ``AIOBlockBackend``.
///
/// io_uring runs its operations outside the calling thread's seccomp filter, so the ring is
/// restricted before it is enabled: its only file is the disk (every operation must name it
/// as a registered file), its only operations readv, writev and fsync, and nothing can be
/// registered afterwards.
public final class UringBlockBackend: DiskImageBackend {
    /// The image served.
    public let disk: DiskImage
    /// The most operations in flight in the kernel; more wait in a backlog.
    public let depth: Int

    private enum Kind { case read, write, flush }

    /// One operation: the iovecs the kernel reads until it completes.
    /// SAFETY: the slot owns the allocation; it moves between threads only inside `state`.
    @safe private struct Slot: @unchecked Sendable {
        let token: UInt64
        let kind: Kind
        let offset: UInt64
        let vectors: UnsafeMutablePointer<iovec>?
        let vectorCount: Int
        let expectedBytes: Int
    }

    private struct State: QueuedBlockState {
        var sink = WeakCompletionSink()
        /// The operations in the ring, by the index their entry's user_data carries.
        var inFlight: InFlightTable<Slot>
        var backlog: [Slot] = []
        var delivering = 0
        var inFlightCount: Int { inFlight.count }
    }

    /// The submission side: the identifiers of queued entries no io_uring_enter took yet, in
    /// the order queued (the kernel takes them in that order).
    private struct Submission { var unsubmitted: [UInt64] = [] }

    /// SAFETY: the rings are shared with the kernel; the submission side is used only under
    /// `submission`'s lock, the completion side only under `completion`'s, and the mapping
    /// lives until deinit, after every user.
    @safe private struct Ring: @unchecked Sendable { let raw: UnsafeMutablePointer<hvd_uring> }

    private let ring: Ring
    private let completions: EventFD
    private let loop: EventLoop
    private let registration: EventLoop.Registration
    private let state: Locked<State>
    private let submission = Locked(Submission())
    private let completion = Locked(())
    private let offload = OffloadWorker(name: "hv-blk-offload")
    private let logger: Logger

    /// - Parameters:
    ///   - disk: the opened disk.
    ///   - eventLoop: where completions that finish later are reaped.
    ///   - depth: the submission ring's size (the kernel may round it); a virtio queue's size
    ///     is a natural choice.
    ///   - logger: where the backend logs I/O errors.
    public init(disk: DiskImage, eventLoop: EventLoop, depth: Int = 256,
                logger: Logger = Logger(label: "hvkit.virtio-blk.uring")) throws(UringBackendError) {
        self.disk = disk
        self.loop = eventLoop
        self.logger = logger
        do {
            completions = try EventFD(nonBlocking: true)
        } catch {
            throw .eventFD(error)
        }
        let raw = UnsafeMutablePointer<hvd_uring>.allocate(capacity: 1)
        var step: Int32 = 0
        let result = unsafe hvd_uring_setup(UInt32(clamping: max(depth, 1)), disk.fileDescriptor.rawValue,
                                            completions.fileDescriptor.rawValue, raw, &step)
        guard result == 0 else {
            unsafe raw.deallocate()
            throw Self.setupError(step: step, errno: Errno(rawValue: -result))
        }
        ring = unsafe Ring(raw: raw)
        self.depth = unsafe Int(raw.pointee.sq_entries)
        state = Locked(State(inFlight: InFlightTable<Slot>(capacity: self.depth)))
        // Capture the pieces, not self: the loop's handler must not keep the backend alive.
        let reaper = Reaper()
        do {
            registration = try eventLoop.register(completions.fileDescriptor) { reaper.backend?.reapAvailable() }
        } catch {
            unsafe hvd_uring_close(raw)
            unsafe raw.deallocate()
            throw .eventFD(error)
        }
        reaper.backend = self
    }

    deinit {
        loop.unregister(registration)
        offload.shutdown()
        drain()
        unsafe hvd_uring_close(ring.raw)
        unsafe ring.raw.deallocate()
    }

    /// The error for a setup that failed at `step` (hvd_uring_setup's numbering) with `errno`.
    static func setupError(step: Int32, errno: Errno) -> UringBackendError {
        if step == 0 {
            switch errno {
            case .permissionDenied, .notPermitted:
                let value = (try? HostFile.read(FilePath("/proc/sys/kernel/io_uring_disabled"), upTo: 16))
                    .flatMap { Int(String(decoding: $0, as: UTF8.self).filter(\.isNumber)) }
                return .disabled(sysctl: value)
            case .noFunction: return .unsupported("the kernel has no io_uring (ENOSYS)")
            case .notSupported: return .unsupported("the kernel is older than Linux 5.11 (no timed waits)")
            case .invalidArgument: return .unsupported("io_uring_setup refused a disabled, restrictable ring (Linux 5.10 has them)")
            default: return .setup(step: "io_uring_setup", errno)
            }
        }
        let steps = ["io_uring_setup", "mapping the rings", "registering the disk", "registering the eventfd",
                     "restricting the ring", "enabling the ring"]
        if step == 4, errno == .invalidArgument { return .unsupported("the kernel cannot restrict a ring (Linux 5.10)") }
        return .setup(step: steps[Int(min(max(step, 0), 5))], errno)
    }

    /// Operations in the ring and not yet reaped, plus the backlog and those being delivered.
    public var pendingCount: Int { state.pendingCount }

    /// Where completions go (the device).
    public func setCompletionSink(_ sink: any BlockCompletionSink) { state.setSink(sink) }

    /// Queues `requests` in the ring (up to ``depth`` in flight, the rest in a backlog), submits
    /// them with one io_uring_enter, and delivers on this thread what completed meanwhile.
    public func submit(_ requests: [BlockRequest]) {
        let sorted = SortedRequests<Slot>(requests, disk: disk, transfer: { token, write, buffers, offset in
            makeSlot(token, write ? .write : .read, buffers, offset: offset)
        }, flush: { token in
            .queue(unsafe Slot(token: token, kind: .flush, offset: 0, vectors: nil, vectorCount: 0, expectedBytes: 0))
        })
        let (prepared, finished, offloaded) = (sorted.queued, sorted.finished, sorted.offloaded)
        state.withLock { state in
            state.backlog.append(contentsOf: prepared)
            state.delivering += finished.count + offloaded.count
        }
        for (token, operation) in offloaded {
            offload.run { [self] in state.deliver([BlockCompletion(token: token, status: operation(disk))]) }
        }
        state.deliver(finished)
        if !prepared.isEmpty {
            // The eventfd is quiet while this thread submits and reaps what completed meanwhile
            // (page-cache hits complete inside io_uring_enter): the event loop need not wake
            // for those. What was posted before the signals came back is reaped here after.
            unsafe hvd_uring_set_quiet(ring.raw, 1)
            state.deliver(submitBacklog())
            reap()
            unsafe hvd_uring_set_quiet(ring.raw, 0)
            reap()
        }
    }

    /// Waits until every submitted request has completed and been delivered.
    public func drain() {
        while pendingCount > 0 {
            state.deliver(submitBacklog())
            if state.withLock({ !$0.inFlight.isEmpty }) {
                // Timed: another thread may reap the last completion between the check and the wait.
                _ = unsafe hvd_uring_wait(ring.raw, 10_000_000)
            } else {
                usleep(100)  // only completions on their way to the device: they are nearly there
            }
            reap()
        }
    }

    // MARK: Submission

    private func makeSlot(_ token: UInt64, _ kind: Kind, _ buffers: GuestBuffers, offset: UInt64) -> Slot {
        let count = unsafe buffers.buffers.count
        let vectors = UnsafeMutablePointer<iovec>.allocate(capacity: max(count, 1))
        // SAFETY: `vectors` holds `count` entries. The buffers were checked against guest RAM
        // when the request was parsed (GuestBuffers), and the device keeps that memory mapped
        // and the chain unused until this slot completes; the slot frees the vectors.
        for unsafe (index, buffer) in unsafe buffers.buffers.enumerated() {
            unsafe (vectors + index).initialize(to: iovec(iov_base: buffer.baseAddress, iov_len: buffer.count))
        }
        return unsafe Slot(token: token, kind: kind, offset: offset, vectors: vectors, vectorCount: count, expectedBytes: buffers.byteCount)
    }

    /// Moves what fits from the backlog into the ring and submits it, with everything queued
    /// before that an earlier enter did not take. Entries the kernel did not take (it was
    /// busy) stay queued for the next enter, which every submission and completion makes.
    private func submitBacklog() -> [BlockCompletion] {
        var failed: [BlockCompletion] = []
        submission.withLock { submission in
            while true {
                let space = unsafe Int(hvd_uring_space(ring.raw))
                let queued = state.withLock { state in
                    let room = min(depth - state.inFlight.count, state.backlog.count, space)
                    var taken = 0
                    // Recorded before the enter: a completion may be reaped before it returns.
                    // The table has room: room is at most depth less what is in flight.
                    while taken < room, let index = state.inFlight.insert(state.backlog[taken]) {
                        let id = UInt64(index)
                        let slot = state.backlog[taken]
                        // Space was counted above, under the submission lock, so queuing cannot fail.
                        switch slot.kind {
                        case .read, .write:
                            _ = unsafe hvd_uring_queue_rw(ring.raw, slot.kind == .write ? 1 : 0, slot.vectors, UInt32(slot.vectorCount), slot.offset, id)
                        case .flush:
                            _ = unsafe hvd_uring_queue_fdatasync(ring.raw, id)
                        }
                        submission.unsubmitted.append(id)
                        taken += 1
                    }
                    state.backlog.removeFirst(taken)
                    return taken
                }
                guard !submission.unsubmitted.isEmpty else { return }
                let result = unsafe hvd_uring_enter(ring.raw, UInt32(submission.unsubmitted.count), 0)
                if result >= 0 {
                    submission.unsubmitted.removeFirst(min(Int(result), submission.unsubmitted.count))
                } else if result == -EAGAIN || result == -EBUSY {
                    // The kernel is short of room for now; what is queued goes with the next
                    // enter, after completions free room.
                    return
                } else if result != -EINTR {
                    // Anything else will not get better: the entries are withdrawn and their
                    // requests fail, rather than wait for an enter that never succeeds.
                    logger.error("io_uring_enter failed", metadata: ["errno": "\(Errno(rawValue: -result))"])
                    let withdrawn = submission.unsubmitted
                    submission.unsubmitted.removeAll()
                    unsafe hvd_uring_unqueue(ring.raw, UInt32(withdrawn.count))
                    failed += state.withLock { state in
                        let slots = withdrawn.compactMap { state.inFlight.remove(at: Int(truncatingIfNeeded: $0)) }
                        state.delivering += slots.count
                        return slots.map { slot in
                            unsafe slot.vectors?.deallocate()
                            return BlockCompletion(token: slot.token, status: .ioError)
                        }
                    }
                    return
                }
                if queued == 0 { return }
            }
        }
        return failed
    }

    /// The ring's descriptor, for the tests that break it.
    var ringDescriptor: Int32 { unsafe ring.raw.pointee.fd }

    /// Queues an operation the ring's restrictions forbid (a NOP), submits it, waits for it and
    /// returns its result: -EACCES when the restrictions hold. For the tests.
    func submitForbiddenOperation() -> Int32 {
        // The completion side held throughout, so that the event loop cannot reap it first.
        completion.withLock { _ in
            submission.withLock { _ in
                _ = unsafe hvd_uring_queue_nop(ring.raw, UInt64.max)
                _ = unsafe hvd_uring_enter(ring.raw, 1, 0)
            }
            var identifier: UInt64 = 0, result: Int32 = 0
            for _ in 0..<100 {
                _ = unsafe hvd_uring_wait(ring.raw, 10_000_000)
                if unsafe hvd_uring_reap(ring.raw, &identifier, &result, 1) == 1 { return result }
            }
            return 0
        }
    }

    // MARK: Completion

    private final class Reaper: @unchecked Sendable {
        // Written once in init before the loop can call the handler.
        weak var backend: UringBlockBackend?
    }

    private func reapAvailable() {
        _ = try? completions.consume()
        reap()
    }

    /// Delivers every completion in the ring, and submits what waited for room.
    private func reap() {
        var reaped = false
        unsafe withUnsafeTemporaryAllocation(of: UInt64.self, capacity: 64) { identifiers in
            unsafe withUnsafeTemporaryAllocation(of: Int32.self, capacity: 64) { results in
                while true {
                    let (count, finished): (Int, [BlockCompletion]) = completion.withLock { _ in
                        let count = unsafe Int(hvd_uring_reap(ring.raw, identifiers.baseAddress, results.baseAddress, UInt32(identifiers.count)))
                        guard count > 0 else { return (0, []) }
                        return (count, state.withLock { state in
                            var finished: [BlockCompletion] = []
                            for index in 0..<count {
                                guard let slot = unsafe state.inFlight.remove(at: Int(truncatingIfNeeded: identifiers[index])) else { continue }
                                let result = unsafe Int(results[index])
                                let status: BlockStatus = result == slot.expectedBytes ? .ok : .ioError
                                if status != .ok {
                                    logger.warning("io_uring operation failed", metadata: ["result": "\(result)", "expected": "\(slot.expectedBytes)"])
                                }
                                finished.append(BlockCompletion(token: slot.token, status: status))
                                unsafe slot.vectors?.deallocate()
                            }
                            state.delivering += finished.count
                            return finished
                        })
                    }
                    guard count > 0 else { return }
                    reaped = true
                    state.deliver(finished)
                }
            }
        }
        if reaped, state.withLock({ !$0.backlog.isEmpty }) { state.deliver(submitBacklog()) }
    }
}

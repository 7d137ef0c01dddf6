import HVCore
import Logging
import Synchronization

extension VirtioFeatures {
    /// VIRTIO_BLK_F_SEG_MAX: seg_max is valid.
    public static let blockSegmentMax = bit(2)
    /// VIRTIO_BLK_F_RO: the disk is read-only.
    public static let blockReadOnly = bit(5)
    /// VIRTIO_BLK_F_BLK_SIZE: blk_size is valid.
    public static let blockSize = bit(6)
    /// VIRTIO_BLK_F_FLUSH: flush requests are honoured.
    public static let blockFlush = bit(9)
    /// VIRTIO_BLK_F_DISCARD.
    public static let blockDiscard = bit(13)
    /// VIRTIO_BLK_F_WRITE_ZEROES.
    public static let blockWriteZeroes = bit(14)
}

/// virtio-blk (virtio 1.2, section 5.2): one request queue served by a ``BlockBackend``.
///
/// Requests are read, write, flush, get-id, discard and write-zeroes. Each chain is checked
/// before any I/O (see the parser); malformed requests get IOERR or UNSUPP in their status
/// byte, and a write to a read-only disk moves no data. A chain with no writable status byte
/// to carry the error breaks the queue and sets DEVICE_NEEDS_RESET: nothing the device refused
/// is ever completed in a way the driver could read as OK. Requests the backend finishes later
/// complete from its thread. One notification takes at most a queue's worth of requests; the
/// transport resumes it for the rest.
public final class BlockDevice: VirtioDevice, BlockCompletionSink {
    /// Where requests go.
    public let backend: any BlockBackend
    /// One request queue of this size.
    public let queueMaxSizes: [UInt16]
    /// What the device offers: SEG_MAX, BLK_SIZE, FLUSH, DISCARD and WRITE_ZEROES (writable disks), RO (read-only ones), and the transport's.
    public let offeredFeatures: VirtioFeatures
    /// The configuration space (virtio_blk_config), fixed at creation.
    public let configuration: [UInt8]

    private struct Pending {
        let queue: LockedVirtqueue
        let statusAddress: GuestAddress
        let usedLength: UInt32
        /// Bytes the request reads from or writes to the disk, for the counts.
        let bytesRead: UInt64
        let bytesWritten: UInt64
    }

    private let completedRequests = Atomic<UInt64>(0)
    private let failedRequests = Atomic<UInt64>(0)
    private let readBytes = Atomic<UInt64>(0)
    private let writtenBytes = Atomic<UInt64>(0)

    /// What the device has done: requests that reached the disk and completed, those that
    /// failed there, and the bytes read and written. Updated once per completion batch.
    public var counts: BlockDeviceCounts {
        BlockDeviceCounts(completedRequests: completedRequests.load(ordering: .relaxed),
                          failedRequests: failedRequests.load(ordering: .relaxed),
                          bytesRead: readBytes.load(ordering: .relaxed),
                          bytesWritten: writtenBytes.load(ordering: .relaxed))
    }

    /// How many requests one notification takes, and for how long.
    public let notificationBudget: NotificationBudget
    /// What limits the requests that reach the backend, if anything.
    public let rateLimiter: RateLimiter?
    private let timers: EventLoop?
    /// Requests parsed but held back by the rate limiter, oldest first; while there are any,
    /// later requests queue behind them.
    private let throttled = Locked<[BlockRequest]>([])
    private let parser: BlockRequestParser
    private let active = Locked<LockedVirtqueue?>(nil)
    private let pending: Locked<PendingTable>
    private let logger: Logger
    /// Guest-caused events, logged rate-limited and counted.
    public let guestEvents: GuestEventLog

    /// - Parameters:
    ///   - backend: where the I/O goes.
    ///   - identifier: the serial the guest reads with GET_ID (at most 20 bytes are used).
    ///   - queueSize: the request queue's maximum size.
    ///   - notificationBudget: how many requests one notification takes, and for how long,
    ///     before the rest is resumed behind other work on the event loop.
    ///   - rateLimiter: limits the requests that reach the backend (one operation each, and
    ///     their data bytes); a throttled request waits, in order, and is never dropped.
    ///   - eventLoop: where a throttled device waits for its tokens (a timer). Without one,
    ///     throttled requests go on at later notifications, as tokens allow.
    ///   - logger: where the device logs refused requests.
    public init(backend: any BlockBackend, identifier: String = "hvkit", queueSize: UInt16 = 256,
                notificationBudget: NotificationBudget = .default, rateLimiter: RateLimiter? = nil,
                eventLoop: EventLoop? = nil, logger: Logger = Logger(label: "hvkit.virtio-blk")) {
        self.backend = backend
        self.rateLimiter = rateLimiter
        self.timers = eventLoop
        self.notificationBudget = notificationBudget
        self.logger = logger
        guestEvents = GuestEventLog(logger: logger)
        let queue = SplitQueue(maxSize: queueSize)
        queueMaxSizes = [queue.maxSize]
        pending = Locked(PendingTable(capacity: Int(queue.maxSize)))
        var features: VirtioFeatures = VirtioFeatures.transportDefaults.union([.blockSegmentMax, .blockSize])
        if backend.isReadOnly { features.insert(.blockReadOnly) }
        if backend.cacheMode != .unsafe { features.insert(.blockFlush) }
        if backend.supportsDiscard, !backend.isReadOnly { features.formUnion([.blockDiscard, .blockWriteZeroes]) }
        offeredFeatures = features
        parser = BlockRequestParser(
            capacity: backend.capacity, isReadOnly: backend.isReadOnly, supportsDiscard: backend.supportsDiscard,
            identifier: Array(identifier.utf8.prefix(BlockRequestParser.identifierLength))
                + [UInt8](repeating: 0, count: max(0, BlockRequestParser.identifierLength - identifier.utf8.count))
        )
        configuration = BlockConfiguration(
            capacitySectors: backend.capacity / DiskImage.sectorSize,
            segmentMax: UInt32(max(Int(queue.maxSize) - 2, 1))
        ).bytes
        backend.setCompletionSink(self)
    }

    /// ``VirtioDeviceType/block`` (2).
    public var deviceType: VirtioDeviceType { .block }

    /// Requests handed to the backend and not finished.
    public var pendingCount: Int { pending.withLock { $0.count } }

    /// The requests handed to the backend, by their token: the chain's head, which is below the
    /// queue's size and names one chain in flight at a time (the queue refuses a head that is
    /// already taken), so a table of that size replaces a dictionary hashed twice per request.
    private struct PendingTable {
        private var entries: [Pending?]
        private(set) var count = 0

        init(capacity: Int) { entries = Array(repeating: nil, count: capacity) }

        mutating func insert(_ entry: Pending, for token: UInt64) {
            guard token < UInt64(entries.count) else { return }
            if entries[Int(token)] == nil { count += 1 }
            entries[Int(token)] = entry
        }

        /// Takes the request `token` names; nil for one not pending (a completion after a reset).
        mutating func remove(_ token: UInt64) -> Pending? {
            guard token < UInt64(entries.count), let entry = entries[Int(token)] else { return nil }
            entries[Int(token)] = nil
            count -= 1
            return entry
        }

        mutating func removeAll() {
            guard count > 0 else { return }
            for index in entries.indices { entries[index] = nil }
            count = 0
        }
    }

    /// Takes the request queue.
    public func activate(_ activation: VirtioActivation) throws(VirtioDeviceError) {
        let queue = try activation.queue(0)
        active.withLock { $0 = queue }
    }

    /// Requests parsed per round before they go to the backend: the backend's work (for the
    /// sync backend all of the I/O, for AIO the copy io_submit does for buffered files) then
    /// counts against the notification's time slice, checked between rounds.
    static let requestsPerRound = 16

    /// Parses the requests the driver queued, in rounds of 16, and hands the
    /// valid ones to the backend; a malformed one is completed as an error without reaching it.
    /// Stops when the budget or its time slice is spent and resumes later for the rest.
    public func queueNotified(_ index: Int) {
        // Holding `active` while parsing and submitting makes reset() wait for this.
        active.withLock { queue in
            guard let queue else { return }
            if throttled.withLock({ $0.isEmpty }) {
                serve(queue)
            } else if timers == nil {
                // No timer to come back: held-back requests go on at notifications.
                releaseThrottled(queue)
            }
            // Otherwise the limiter's timer comes back for the queue once tokens are there.
        }
    }

    /// Serves `queue` in rounds until it is empty, the budget or its time slice is spent (then
    /// it resumes later), or the rate limiter holds requests back (then its timer resumes it).
    private func serve(_ queue: LockedVirtqueue) {
        let deadline = notificationBudget.timeSlice.map(HostClock.monotonicDeadline(after:))
        var remaining = notificationBudget.chains ?? Int(queue.size)
        while remaining > 0 {
            var requests: [BlockRequest] = []
            let round = NotificationBudget(chains: min(remaining, Self.requestsPerRound), timeSlice: nil)
            let progress = queue.processAvailable(budget: round, resumingWhenExhausted: false, malformed: { refused in
                // The chain's last byte was validated as writable: report IOERR there.
                guard let statusByte = refused.statusByte else { return nil }
                return writeStatus(.ioError, at: statusByte, in: queue.memory) ? 1 : nil
            }) { chain in
                serve(chain, from: queue, into: &requests)
            }
            let admitted = admit(requests)
            if !admitted.isEmpty { backend.submit(admitted) }
            if admitted.count < requests.count {
                waitForTokens()
                return
            }
            guard progress.workLeft else { return }
            remaining -= progress.chainsTaken
            if let deadline, HostClock.monotonicNanoseconds() > deadline { break }
        }
        queue.scheduleResumption()
    }

    /// Queues `requests` behind those held back and returns the oldest ones the rate limiter
    /// lets through now, in order (all of them when there is no limiter).
    private func admit(_ requests: [BlockRequest]) -> [BlockRequest] {
        guard let rateLimiter else { return requests }
        return throttled.withLock { throttled in
            throttled += requests
            var admitted: [BlockRequest] = []
            while let first = throttled.first, rateLimiter.consume(bytes: first.operation.dataBytes) {
                admitted.append(throttled.removeFirst())
            }
            return admitted
        }
    }

    /// Arms a timer for when the oldest throttled request's tokens are there.
    private func waitForTokens() {
        guard let rateLimiter, let timers, let first = throttled.withLock({ $0.first }) else { return }
        rateLimiter.whenTokensAllow(bytes: first.operation.dataBytes, on: timers) { [weak self] in
            guard let self else { return }
            active.withLock { queue in
                if let queue { releaseThrottled(queue) }
            }
        }
    }

    /// Submits the held-back requests the buckets allow now, oldest first; then goes on serving
    /// the queue once nothing is held back, or waits for the next tokens.
    private func releaseThrottled(_ queue: LockedVirtqueue) {
        let ready = admit([])
        if !ready.isEmpty { backend.submit(ready) }
        if throttled.withLock({ $0.isEmpty }) {
            serve(queue)
        } else {
            waitForTokens()
        }
    }

    /// Parses one request: answers it at once, or records it and adds it to `requests`.
    private func serve(_ chain: DescriptorChain, from queue: LockedVirtqueue, into requests: inout [BlockRequest]) -> ChainDisposition {
        switch parser.parse(chain, in: queue.memory) {
        case let .unanswerable(reason):
            guestEvents.record("unanswerable-request", "virtio-blk request cannot be answered",
                               metadata: ["head": "\(chain.head)", "reason": "\(reason)"])
            return .unanswerable(reason: reason)
        case let .immediate(status, statusAddress, usedLength):
            return writeStatus(status, at: statusAddress, in: queue.memory)
                ? .used(length: usedLength) : .unanswerable(reason: "the status byte cannot be written")
        case let .io(operation, statusAddress, usedLength):
            let token = UInt64(chain.head)
            var (read, written): (UInt64, UInt64) = (0, 0)
            switch operation {
            case let .read(_, buffers): read = UInt64(buffers.byteCount)
            case let .write(_, buffers): written = UInt64(buffers.byteCount)
            default: break
            }
            pending.withLock {
                $0.insert(Pending(queue: queue, statusAddress: statusAddress, usedLength: usedLength, bytesRead: read, bytesWritten: written), for: token)
            }
            requests.append(BlockRequest(token: token, operation: operation))
            return .pending
        }
    }

    /// Stops taking requests and waits for those in flight, so nothing writes guest memory once it returns.
    public func reset() {
        active.withLock { $0 = nil }
        // Held-back requests belong to the queues being reset: they never reach the disk.
        throttled.withLock { $0.removeAll() }
        // Nothing may write guest memory once reset returns.
        backend.drain()
        pending.withLock { $0.removeAll() }
    }

    /// Writes each request's status byte and returns the chains to the driver, at most one
    /// interrupt per batch.
    public func blockOperationsCompleted(_ results: [BlockCompletion]) {
        // One array for the whole batch: the requests of one batch belong to the one queue
        // the device serves (a reset, which changes it, waits for every request first), and
        // a change of queue, were it to happen, completes what came before it on its own queue.
        var queue: LockedVirtqueue?
        var completions: [(head: UInt16, length: UInt32)] = []
        completions.reserveCapacity(results.count)
        var (completed, failed, read, written): (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        for result in results {
            guard let request = pending.withLock({ $0.remove(result.token) }) else { continue }
            if result.status == .ok {
                completed += 1
                read += request.bytesRead
                written += request.bytesWritten
            } else {
                failed += 1
            }
            let written = writeStatus(result.status, at: request.statusAddress, in: request.queue.memory)
            let length: UInt32 = written ? (result.status == .ok ? request.usedLength : 1) : 0
            if let current = queue, current !== request.queue {
                current.complete(completions)
                completions.removeAll(keepingCapacity: true)
            }
            queue = request.queue
            completions.append((head: UInt16(truncatingIfNeeded: result.token), length: length))
        }
        if let queue, !completions.isEmpty { queue.complete(completions) }
        // One update per batch, off the guest's exit path.
        if completed > 0 { completedRequests.add(completed, ordering: .relaxed) }
        if failed > 0 { failedRequests.add(failed, ordering: .relaxed) }
        if read > 0 { readBytes.add(read, ordering: .relaxed) }
        if written > 0 { writtenBytes.add(written, ordering: .relaxed) }
    }

    private func writeStatus(_ status: BlockStatus, at address: GuestAddress, in memory: any GuestMemory) -> Bool {
        do {
            try memory.write(status.rawValue, at: address)
            return true
        } catch {
            guestEvents.record("status-not-written", "cannot write virtio-blk status", metadata: ["error": "\(error)"])
            return false
        }
    }
}

/// The virtio-blk configuration space (struct virtio_blk_config), 60 bytes little-endian.
struct BlockConfiguration {
    var capacitySectors: UInt64
    var segmentMax: UInt32

    var bytes: [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 60)
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            for index in 0..<(T.bitWidth / 8) { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
        }
        put(capacitySectors, at: 0)  // capacity
        put(segmentMax, at: 12)  // seg_max
        put(UInt32(DiskImage.sectorSize), at: 20)  // blk_size
        put(UInt16(1), at: 34)  // num_queues
        put(BlockRequestParser.maximumZeroingSectors, at: 36)  // max_discard_sectors
        put(UInt32(1), at: 40)  // max_discard_seg
        put(UInt32(1), at: 44)  // discard_sector_alignment
        put(BlockRequestParser.maximumZeroingSectors, at: 48)  // max_write_zeroes_sectors
        put(UInt32(1), at: 52)  // max_write_zeroes_seg
        bytes[56] = 1  // write_zeroes_may_unmap
        return bytes
    }
}

/// What a ``BlockDevice`` has done since it was made.
public struct BlockDeviceCounts: Sendable, Hashable {
    /// Requests that reached the backend and completed successfully.
    public var completedRequests: UInt64
    /// Requests that reached the backend and failed there (I/O errors).
    public var failedRequests: UInt64
    /// Bytes read from the disk into guest memory.
    public var bytesRead: UInt64
    /// Bytes written from guest memory to the disk.
    public var bytesWritten: UInt64
}

/// A disk saves nothing of its own: before the save every request the guest made is finished
/// (those the rate limiter held back are let through), so the guest's memory and the image
/// file hold all of it.
extension BlockDevice: SnapshotStateful {
    /// The version of the state ``saveState(to:)`` writes.
    public var snapshotVersion: UInt16 { 1 }

    /// Brings the device to rest for a snapshot: nothing in flight, nothing held.
    public func prepareSnapshot() throws(SnapshotError) {
        // Holding `active` keeps a notification from taking new requests meanwhile.
        active.withLock { _ in
            let held = throttled.withLock { throttled in
                defer { throttled.removeAll() }
                return throttled
            }
            if !held.isEmpty { backend.submit(held) }
            backend.drain()
        }
    }

    /// Writes the state a restore needs.
    public func saveState(to encoder: inout SnapshotEncoder) {}

    /// Takes on a saved state, refusing values that cannot be right.
    public func restoreState(from decoder: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        try decoder.expectEnd()
    }
}


import Glibc
import HVCore
import Logging
import Synchronization

/// The receive path of a virtio-net device: frames read from the backend straight into the
/// guest's receive buffers.
///
/// The receiver takes the driver's receive chains from the queue as they come and holds them
/// (in flight) until a frame fills them. A frame is read with one `readv` into the host
/// addresses of the chains it may need: the first chain alone, or under MRG_RXBUF as many
/// as cover the largest frame the backend may hand over, then a spare byte. What the read
/// returns says which chains the frame used; each is completed with its share, the header's
/// num_buffers says how many there were, and the unused chains wait for the next frame. A read
/// that reaches the spare byte was a frame too large for the buffers: it is dropped and
/// counted, and the chains stay for the next frame.
///
/// The backend is read only while chains are held: with none, the receiver stops watching the
/// backend's descriptor and waits for the driver's next notification, so it neither spins
/// nor reads a frame it has no place for.
@safe final class NetReceiver: Sendable {
    @safe private struct HeldChain {
        let head: UInt16
        let buffers: [iovec]
        let capacity: Int
    }

    @safe private struct State {
        var queue: LockedVirtqueue?
        /// Oldest first. A slice, so that the chains a frame used leave from the front without
        /// moving the rest.
        var held: ArraySlice<HeldChain> = []
        var heldCapacity = 0
        /// The iovecs of one read, kept between reads.
        var readVectors: [iovec] = unsafe []
        var mergeable = false
        /// The largest frame, header included, the backend may hand over now.
        var frameLimit = 0
        var registration: EventLoop.Registration?
        /// Whether the event loop watches the backend now (it starts paused).
        var watching = false
        var closed = false
        /// Frames already in the guest's buffers whose completion the rate limiter holds back,
        /// oldest first; nothing more is read while there are any.
        var deferred: [(completions: [(head: UInt16, length: UInt32)], bytes: UInt64)] = []
        var timerArmed = false
    }

    private let backend: any NetBackend
    private let eventLoop: EventLoop
    private let counters: NetCounters
    private let events: GuestEventLog
    private let budget: NotificationBudget
    private let rateLimiter: RateLimiter?
    private let state = Locked(State())
    /// One byte past the guest's buffers in every read, to notice a frame that did not fit.
    // SAFETY: allocated here, freed in deinit, touched only by readv under `state`'s lock.
    private nonisolated(unsafe) let spareByte = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 1)

    init(backend: any NetBackend, eventLoop: EventLoop, counters: NetCounters, events: GuestEventLog,
         budget: NotificationBudget, rateLimiter: RateLimiter?) throws(NetBackendError) {
        self.backend = backend
        self.rateLimiter = rateLimiter
        self.eventLoop = eventLoop
        self.counters = counters
        self.events = events
        self.budget = budget
        do {
            let registration = try eventLoop.register(backend.fileDescriptor) { [weak self] in self?.deliverFrames() }
            // Nothing is read before a driver posts buffers.
            try eventLoop.setWatching(registration, false)
            state.withLock { $0.registration = registration }
        } catch {
            throw .io(backend: backend.name, operation: "watching its descriptor (epoll_ctl)", error)
        }
    }

    deinit {
        if let registration = state.withLock({ $0.registration }) { eventLoop.unregister(registration) }
        unsafe spareByte.deallocate()
    }

    /// Whether the event loop watches the backend now.
    var isWatching: Bool { state.withLock { $0.watching } }

    /// Starts filling `queue`'s chains with frames of at most `frameLimit` bytes, header
    /// included; `mergeable` when the driver accepted MRG_RXBUF.
    func start(_ queue: LockedVirtqueue, mergeable: Bool, frameLimit: Int) {
        state.withLock { state in
            state.queue = queue
            state.held = []
            state.heldCapacity = 0
            state.mergeable = mergeable
            state.frameLimit = frameLimit
        }
        deliverFrames()
    }

    /// Drops the queue and the chains held from it (the driver's reset takes them back).
    func stop() {
        state.withLock { state in
            state.queue = nil
            state.held = []
            state.heldCapacity = 0
            state.deferred = []
            watch(false, &state)
        }
    }

    /// Before a snapshot: announces the frames the rate limiter held back (they are in the
    /// guest's buffers already) and gives the chains held for frames to come back to the
    /// queue; false if the queue would not take them. ``deliverFrames()`` takes them again.
    func giveBackForSnapshot() -> Bool {
        state.withLock { state in
            guard let queue = state.queue else { return true }
            let deferred = state.deferred.flatMap(\.completions)
            if !deferred.isEmpty { queue.complete(deferred) }
            state.deferred = []
            watch(false, &state)
            guard state.held.isEmpty || queue.giveBack(heads: state.held.map(\.head)) else { return false }
            state.held = []
            state.heldCapacity = 0
            return true
        }
    }

    /// Moves waiting frames into held chains, taking newly posted chains first, at most a
    /// budget of frames per call (the event loop comes back for the rest). Called when the
    /// backend's descriptor is readable and when the driver posts buffers.
    func deliverFrames() {
        state.withLock { state in
            guard let queue = state.queue, !state.closed, state.deferred.isEmpty else {
                // Closed, stopped, or waiting for the rate limiter's timer.
                watch(false, &state)
                return
            }
            var completions: [(head: UInt16, length: UInt32)] = []
            // Counted here and published once, before the frames are announced.
            var received: (frames: UInt64, bytes: UInt64) = (0, 0)
            defer {
                if received.frames > 0 {
                    counters.receivedFrames.add(received.frames, ordering: .relaxed)
                    counters.receivedBytes.add(received.bytes, ordering: .relaxed)
                }
                if !completions.isEmpty { queue.complete(completions) }
            }
            let limit = max(budget.chains ?? Int(queue.size), 1)
            let deadline = budget.timeSlice.map(HostClock.monotonicDeadline(after:))
            var frames = 0
            while true {
                guard frames < limit, frames == 0 || deadline.map({ HostClock.monotonicNanoseconds() <= $0 }) ?? true else {
                    // Out of budget: the level-triggered loop calls again for the rest, if
                    // there is room for it; with none, the driver's notification resumes.
                    if chainsForNextFrame(state) == 0 { takePostedChains(from: queue, &state) }
                    watch(chainsForNextFrame(state) > 0, &state)
                    return
                }
                var chainCount = chainsForNextFrame(state)
                if chainCount == 0 {
                    takePostedChains(from: queue, &state)
                    chainCount = chainsForNextFrame(state)
                }
                guard chainCount > 0, queue.fault == nil else {
                    // Nowhere to put a frame: wait for the driver's notification.
                    watch(false, &state)
                    return
                }
                guard let length = receive(into: state.held.prefix(chainCount), &state) else { return }
                let capacity = state.held.prefix(chainCount).reduce(0) { $0 + $1.capacity }
                guard length <= capacity, length >= NetHeader.size else {
                    counters.droppedReceiveFrames.add(1, ordering: .relaxed)
                    events.record("dropped-receive", level: .debug, "dropped a received frame",
                                  metadata: ["bytes": "\(length)", "room": "\(capacity)"])
                    continue
                }
                // The frame's chains, each with its share, go to the completions.
                let frameStart = completions.count
                var left = length
                for chain in state.held.prefix(chainCount) where left > 0 {
                    let share = min(left, chain.capacity)
                    completions.append((chain.head, UInt32(share)))
                    left -= share
                    state.heldCapacity -= chain.capacity
                }
                let chainsUsed = completions.count - frameStart
                if let first = state.held.first { unsafe Self.writeBufferCount(UInt16(chainsUsed), into: first.buffers) }
                state.held.removeFirst(chainsUsed)
                frames += 1
                let bytes = UInt64(length - NetHeader.size)
                received.frames += 1
                received.bytes += bytes
                if let rateLimiter, !rateLimiter.consume(bytes: bytes) {
                    // The frame waits in the guest's buffers, unannounced, and nothing more is
                    // read until the timer hands it over.
                    state.deferred.append((Array(completions[frameStart...]), bytes))
                    completions.removeSubrange(frameStart...)
                    watch(false, &state)
                    armTimer(&state)
                    return
                }
            }
        }
    }

    /// Announces the held-back frames the buckets allow now, and reads on once none is left.
    private func releaseDeferred() {
        let drained = state.withLock { state -> Bool in
            state.timerArmed = false
            guard let queue = state.queue, let rateLimiter else { return false }
            var completions: [(head: UInt16, length: UInt32)] = []
            while let first = state.deferred.first, rateLimiter.consume(bytes: first.bytes) {
                completions += state.deferred.removeFirst().completions
            }
            if !completions.isEmpty { queue.complete(completions) }
            armTimer(&state)
            return state.deferred.isEmpty
        }
        if drained { deliverFrames() }
    }

    /// Arms a timer for when the oldest held-back frame's tokens are there.
    private func armTimer(_ state: inout State) {
        guard let rateLimiter, let first = state.deferred.first, !state.timerArmed else { return }
        state.timerArmed = true
        rateLimiter.whenTokensAllow(bytes: first.bytes, on: eventLoop) { [weak self] in self?.releaseDeferred() }
    }

    /// How many held chains the next frame is read into: the first alone, or under
    /// MRG_RXBUF as many as cover the frame limit; 0 when those are not held yet.
    private func chainsForNextFrame(_ state: State) -> Int {
        guard state.mergeable else { return state.held.isEmpty ? 0 : 1 }
        guard state.heldCapacity >= state.frameLimit else { return 0 }
        var covered = 0
        for (index, chain) in state.held.enumerated() {
            covered += chain.capacity
            if covered >= state.frameLimit { return index + 1 }
        }
        return 0
    }

    /// Reads one frame into `chains` and the spare byte. nil when none waits (the receiver
    /// watches the backend for the next) or the backend failed (it stops watching).
    private func receive(into chains: ArraySlice<HeldChain>, _ state: inout State) -> Int? {
        unsafe state.readVectors.removeAll(keepingCapacity: true)
        for chain in chains { unsafe state.readVectors += chain.buffers }
        unsafe state.readVectors.append(iovec(iov_base: spareByte, iov_len: 1))
        let result: Int?
        do {
            result = unsafe try state.readVectors.withUnsafeBufferPointer { vectors throws(NetBackendError) in unsafe try backend.receive(into: vectors) }
        } catch {
            if case .closed = error { state.closed = true }
            // Not read again until the driver's next notification, so a failing backend cannot spin.
            events.record("backend-error", "network backend failed on receive", metadata: ["error": "\(error)"])
            watch(false, &state)
            return nil
        }
        if result == nil { watch(true, &state) }
        return result
    }

    /// Holds every chain the driver posted, refusing the shapes a receive buffer cannot have.
    private func takePostedChains(from queue: LockedVirtqueue, _ state: inout State) {
        let memory = queue.memory
        let frameLimit = state.frameLimit
        var taken: [HeldChain] = []
        queue.processAvailable(budget: NotificationBudget(chains: nil, timeSlice: nil), resumingWhenExhausted: false) { chain in
            guard chain.readableLength == 0 else {
                return .unanswerable(reason: "receive buffer \(chain.head) has device-readable descriptors")
            }
            guard chain.writableLength >= UInt64(NetHeader.size) else {
                return .unanswerable(reason: "receive buffer \(chain.head) has room for \(chain.writableLength) bytes, less than the header")
            }
            var writer = chain.writer(in: memory)
            let capacity = min(writer.remaining, UInt64(frameLimit))
            do {
                let buffers = unsafe try writer.hostBuffers(capacity)
                unsafe taken.append(HeldChain(head: chain.head, buffers: buffers.map { unsafe iovec(iov_base: $0.baseAddress, iov_len: $0.count) },
                                       capacity: Int(capacity)))
                return .pending
            } catch {
                return .unanswerable(reason: "receive buffer \(chain.head): \(error)")
            }
        }
        state.held += taken
        state.heldCapacity += taken.reduce(0) { $0 + $1.capacity }
    }

    private func watch(_ watching: Bool, _ state: inout State) {
        let watching = watching && !state.closed
        guard let registration = state.registration, watching != state.watching else { return }
        do {
            try eventLoop.setWatching(registration, watching)
            state.watching = watching
        } catch {
            events.record("backend-error", "could not change the watch on the network backend", metadata: ["error": "\(error)"])
        }
    }

    /// Writes num_buffers (header bytes 10 and 11, little-endian) into a chain's buffers,
    /// which the header may straddle (every receive chain has room for the header).
    private static func writeBufferCount(_ count: UInt16, into buffers: [iovec]) {
        unsafe IOVectors.store(UInt8(truncatingIfNeeded: count), at: 10, in: buffers)
        unsafe IOVectors.store(UInt8(truncatingIfNeeded: count >> 8), at: 11, in: buffers)
    }
}

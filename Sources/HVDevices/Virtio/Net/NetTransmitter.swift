import Glibc
import HVCore
import Synchronization

/// The transmit path of a virtio-net device: each chain the driver queues becomes one frame
/// the backend sends, gathered with one `writev` from the guest's buffers.
///
/// The header is copied out of the chain once and checked (``NetHeader/validatedForTransmit(frameLength:negotiated:)``);
/// the backend gets that checked copy, never the guest's bytes, so nothing unchecked reaches
/// the host kernel's offload code. The frame itself goes from guest memory untouched. A
/// malformed frame (a header asking for what was not negotiated, shorter than an Ethernet
/// header, longer than the limit, device-writable buffers) is dropped and counted; its chain
/// is completed like every transmit chain, with used length 0, which tells the driver only
/// that the buffer is free.
final class NetTransmitter: Sendable {
    private struct State {
        var queue: LockedVirtqueue?
        var features: VirtioFeatures = []
        /// The largest frame, header included, the driver may send.
        var frameLimit = 0
        /// Chains taken but held back by the rate limiter, oldest first; while there are any,
        /// later chains queue behind them.
        var throttled: [DescriptorChain] = []
        /// Whether a timer is armed to release them.
        var timerArmed = false
    }

    /// The shortest frame a backend takes: an Ethernet header.
    static let minimumFrameLength = 14

    private let backend: any NetBackend
    private let counters: NetCounters
    private let events: GuestEventLog
    private let budget: NotificationBudget
    private let rateLimiter: RateLimiter?
    private let timers: EventLoop
    private let state = Locked(State())

    init(backend: any NetBackend, counters: NetCounters, events: GuestEventLog, budget: NotificationBudget,
         rateLimiter: RateLimiter?, timers: EventLoop) {
        self.backend = backend
        self.counters = counters
        self.events = events
        self.budget = budget
        self.rateLimiter = rateLimiter
        self.timers = timers
    }

    /// Starts sending what the driver queues on `queue`.
    func start(_ queue: LockedVirtqueue, features: VirtioFeatures, frameLimit: Int) {
        state.withLock { $0 = State(queue: queue, features: features, frameLimit: frameLimit) }
    }

    /// Drops the queue and the frames held back (the driver's reset takes their chains back).
    func stop() {
        state.withLock { $0 = State() }
    }

    /// Sends the frames the driver queued, at most a budget of them (the transport resumes the
    /// rest behind other work). With a rate limiter, a frame without tokens waits, in order,
    /// and is never dropped: its chain is held (with the ones after it) and the event loop's
    /// timer sends it once the buckets allow.
    func transmitQueued() {
        // Holding the lock while sending makes stop() wait for this.
        state.withLock { state in
            guard let queue = state.queue, state.throttled.isEmpty else { return }
            let memory = queue.memory
            var sent = SentTally()
            defer { sent.publish(to: counters) }
            queue.processAvailable(budget: budget) { chain in
                guard let rateLimiter else {
                    transmit(chain, in: memory, state, counting: &sent)
                    return .used(length: 0)
                }
                guard state.throttled.isEmpty, rateLimiter.consume(bytes: Self.frameBytes(chain)) else {
                    state.throttled.append(chain)
                    return .pending
                }
                transmit(chain, in: memory, state, counting: &sent)
                return .used(length: 0)
            }
            armTimer(&state)
        }
    }

    /// Before a snapshot: gives the chains the rate limiter holds back to the queue, to be
    /// taken and sent again (by ``transmitQueued()``); false if the queue would not take them.
    func giveBackForSnapshot() -> Bool {
        state.withLock { state in
            guard let queue = state.queue, !state.throttled.isEmpty else { return true }
            guard queue.giveBack(state.throttled) else { return false }
            state.throttled = []
            return true
        }
    }

    /// Sends the held-back frames the buckets allow now, then whatever the driver queued
    /// meanwhile once none is held back.
    private func releaseThrottled() {
        let drained = state.withLock { state -> Bool in
            state.timerArmed = false
            guard let queue = state.queue, let rateLimiter else { return false }
            var completions: [(head: UInt16, length: UInt32)] = []
            var sent = SentTally()
            defer { sent.publish(to: counters) }
            while let first = state.throttled.first, rateLimiter.consume(bytes: Self.frameBytes(first)) {
                transmit(state.throttled.removeFirst(), in: queue.memory, state, counting: &sent)
                completions.append((first.head, 0))
            }
            if !completions.isEmpty { queue.complete(completions) }
            armTimer(&state)
            return state.throttled.isEmpty
        }
        if drained { transmitQueued() }
    }

    /// Arms a timer for when the oldest held-back frame's tokens are there.
    private func armTimer(_ state: inout State) {
        guard let rateLimiter, let first = state.throttled.first, !state.timerArmed else { return }
        state.timerArmed = true
        rateLimiter.whenTokensAllow(bytes: Self.frameBytes(first), on: timers) { [weak self] in self?.releaseThrottled() }
    }

    /// The bytes a chain's frame counts against the bandwidth bucket (without the header).
    private static func frameBytes(_ chain: DescriptorChain) -> UInt64 {
        chain.readableLength > UInt64(NetHeader.size) ? chain.readableLength - UInt64(NetHeader.size) : 0
    }

    /// Frames and bytes sent by one call, added to the device's counters once at its end rather
    /// than with two locked instructions per frame (the counters are read between calls).
    private struct SentTally {
        var frames: UInt64 = 0
        var bytes: UInt64 = 0

        func publish(to counters: NetCounters) {
            guard frames > 0 else { return }
            counters.transmittedFrames.add(frames, ordering: .relaxed)
            counters.transmittedBytes.add(bytes, ordering: .relaxed)
        }
    }

    private func transmit(_ chain: DescriptorChain, in memory: any GuestMemory, _ state: State, counting sent: inout SentTally) {
        do throws(TransmitRefusal) {
            let bytes = try send(chain, in: memory, state)
            sent.frames += 1
            sent.bytes += UInt64(bytes)
        } catch {
            counters.droppedTransmitFrames.add(1, ordering: .relaxed)
            switch error {
            case let .malformed(reason):
                events.record("malformed-transmit", "dropped a malformed transmit frame",
                              metadata: ["head": "\(chain.head)", "reason": "\(reason)"])
            case let .backend(error):
                events.record("backend-error", "network backend failed on transmit", metadata: ["error": "\(error)"])
            case .backendFull:
                events.record("transmit-full", level: .debug, "network backend full, frame dropped")
            }
        }
    }

    private enum TransmitRefusal: Error {
        case malformed(String)
        case backend(NetBackendError)
        case backendFull
    }

    /// Sends the frame in `chain`; returns its length (without the header).
    private func send(_ chain: DescriptorChain, in memory: any GuestMemory, _ state: State) throws(TransmitRefusal) -> Int {
        guard chain.writableLength == 0 else { throw .malformed("the chain has device-writable descriptors") }
        guard chain.readableLength >= UInt64(NetHeader.size + Self.minimumFrameLength) else {
            throw .malformed("\(chain.readableLength) bytes is less than a header and an Ethernet header")
        }
        guard chain.readableLength <= UInt64(state.frameLimit) else {
            throw .malformed("\(chain.readableLength) bytes is more than the \(state.frameLimit) allowed")
        }
        let frameLength = Int(chain.readableLength) - NetHeader.size
        var reader = chain.reader(in: memory)
        // The header lives on the stack from the guest's copy to the backend: no allocation.
        let sent = unsafe try withUnsafeTemporaryAllocation(byteCount: NetHeader.size, alignment: 2) {
            headerBuffer throws(TransmitRefusal) -> Result<Bool, NetBackendError> in
            do {
                unsafe try reader.read(into: headerBuffer)
                guard let copied = unsafe NetHeader(loading: UnsafeRawBufferPointer(headerBuffer)) else { throw TransmitRefusal.malformed("no header") }
                var header = try copied.validatedForTransmit(frameLength: frameLength, negotiated: state.features)
                // DATA_VALID means something only on receive; the other end must not take it as said.
                header.flags &= ~NetHeader.dataValid
                unsafe header.store(into: headerBuffer)
            } catch let error as TransmitRefusal {
                throw error
            } catch {
                throw .malformed("\(error)")
            }
            let header = unsafe iovec(iov_base: headerBuffer.baseAddress, iov_len: NetHeader.size)
            // Nearly always: the frame's iovecs straight from the host addresses the chain's
            // check kept, behind the header's, with no lookup and no array.
            let fast = unsafe withUnsafeTemporaryAllocation(of: iovec.self, capacity: chain.segments.count + 1) {
                vectors -> Result<Bool, NetBackendError>? in
                guard let count = unsafe chain.readableIOVectors(from: UInt64(NetHeader.size), in: memory, into: vectors, at: 1) else { return nil }
                unsafe vectors[0] = header
                return Result { () throws(NetBackendError) in
                    unsafe try backend.transmit(UnsafeBufferPointer(rebasing: vectors[..<(count + 1)]))
                }
            }
            if let fast { return fast }
            let buffers: [UnsafeMutableRawBufferPointer]
            do {
                unsafe buffers = unsafe try reader.hostBuffers(UInt64(frameLength))
            } catch {
                throw .malformed("\(error)")
            }
            return unsafe withUnsafeTemporaryAllocation(of: iovec.self, capacity: buffers.count + 1) { vectors in
                unsafe vectors[0] = header
                for unsafe (index, buffer) in unsafe buffers.enumerated() {
                    unsafe vectors[index + 1] = unsafe iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
                }
                return Result { () throws(NetBackendError) in unsafe try backend.transmit(UnsafeBufferPointer(vectors)) }
            }
        }
        switch sent {
        case .success(true):
            return frameLength
        case .success(false):
            throw .backendFull
        case let .failure(error):
            throw .backend(error)
        }
    }
}

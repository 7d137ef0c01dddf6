import Glibc
import HVCore
import Synchronization

/// The transmit path of a virtio-net device: each chain the driver queues becomes one frame
/// the backend sends, gathered with one `writev` from the guest's buffers. A notification's
/// frames are checked and gathered first, then written back to back (``TransmitBatch``).
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
        /// The frames gathered and not yet written.
        var batch = TransmitBatch()
        /// The chains taken whose frames were written or dropped, to give back to the driver.
        var finished: [(head: UInt16, length: UInt32)] = []
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
            queue.processAvailable(budget: budget) { chain in
                if let rateLimiter {
                    guard state.throttled.isEmpty, rateLimiter.consume(bytes: Self.frameBytes(chain)) else {
                        state.throttled.append(chain)
                        return .pending
                    }
                }
                gather(chain, in: memory, &state)
                // Completed once its frame is written (see TransmitBatch).
                return .pending
            }
            writeGathered(&state, completingIn: queue)
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
            while let first = state.throttled.first, rateLimiter.consume(bytes: Self.frameBytes(first)) {
                state.throttled.removeFirst()
                gather(first, in: queue.memory, &state)
            }
            writeGathered(&state, completingIn: queue)
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

    /// Adds the frame in `chain` to the batch (writing the batch first when it is full), or
    /// drops it if it is malformed; either way its chain is completed after the next write.
    private func gather(_ chain: DescriptorChain, in memory: any GuestMemory, _ state: inout State) {
        if state.batch.isFull { writeBatch(state.batch) }
        do throws(TransmitRefusal) {
            try Self.gather(chain, in: memory, features: state.features, frameLimit: state.frameLimit, into: state.batch)
        } catch {
            drop(error, head: chain.head)
        }
        state.finished.append((chain.head, 0))
    }

    /// Writes what was gathered, then gives the driver back every chain taken, with used
    /// length 0, which tells it only that the buffers are free.
    private func writeGathered(_ state: inout State, completingIn queue: LockedVirtqueue) {
        writeBatch(state.batch)
        guard !state.finished.isEmpty else { return }
        queue.complete(state.finished)
        state.finished.removeAll(keepingCapacity: true)
    }

    /// Writes the batch's frames back to back; the frames and bytes sent are added to the
    /// device's counters once, rather than with two locked instructions per frame.
    private func writeBatch(_ batch: TransmitBatch) {
        guard !batch.isEmpty else { return }
        var frames: UInt64 = 0
        var bytes: UInt64 = 0
        batch.write(to: backend) { head, length, result in
            switch result {
            case .success(true):
                frames += 1
                bytes += UInt64(length)
            case .success(false):
                drop(.backendFull, head: head)
            case let .failure(error):
                drop(.backend(error), head: head)
            }
        }
        guard frames > 0 else { return }
        counters.transmittedFrames.add(frames, ordering: .relaxed)
        counters.transmittedBytes.add(bytes, ordering: .relaxed)
    }

    /// Counts and logs a frame that was not sent; its chain still goes back to the driver.
    private func drop(_ refusal: TransmitRefusal, head: UInt16) {
        counters.droppedTransmitFrames.add(1, ordering: .relaxed)
        switch refusal {
        case let .malformed(reason):
            events.record("malformed-transmit", "dropped a malformed transmit frame",
                          metadata: ["head": "\(head)", "reason": "\(reason)"])
        case let .backend(error):
            events.record("backend-error", "network backend failed on transmit", metadata: ["head": "\(head)", "error": "\(error)"])
        case .backendFull:
            events.record("transmit-full", level: .debug, "network backend full, frame dropped", metadata: ["head": "\(head)"])
        }
    }

    private enum TransmitRefusal: Error {
        case malformed(String)
        case backend(NetBackendError)
        case backendFull
    }

    /// Checks the frame in `chain` and adds it to `batch`: its header copied out of the chain
    /// and checked, then its bytes' iovecs in guest memory.
    private static func gather(
        _ chain: DescriptorChain, in memory: any GuestMemory, features: VirtioFeatures, frameLimit: Int,
        into batch: TransmitBatch
    ) throws(TransmitRefusal) {
        guard chain.writableLength == 0 else { throw .malformed("the chain has device-writable descriptors") }
        guard chain.readableLength >= UInt64(NetHeader.size + minimumFrameLength) else {
            throw .malformed("\(chain.readableLength) bytes is less than a header and an Ethernet header")
        }
        guard chain.readableLength <= UInt64(frameLimit) else {
            throw .malformed("\(chain.readableLength) bytes is more than the \(frameLimit) allowed")
        }
        let frameLength = Int(chain.readableLength) - NetHeader.size
        try unsafe batch.add(head: chain.head, length: frameLength) { headerSlot, vectors throws(TransmitRefusal) in
            var reader = chain.reader(in: memory)
            do throws(ChainAccessError) {
                unsafe try reader.read(into: headerSlot)
            } catch {
                throw .malformed("\(error)")
            }
            guard let copied = unsafe NetHeader(loading: UnsafeRawBufferPointer(headerSlot)) else { throw .malformed("no header") }
            var header: NetHeader
            do throws(NetHeader.TransmitError) {
                header = try copied.validatedForTransmit(frameLength: frameLength, negotiated: features)
            } catch {
                throw .malformed("\(error)")
            }
            // DATA_VALID means something only on receive; the other end must not take it as said.
            header.flags &= ~NetHeader.dataValid
            unsafe header.store(into: headerSlot)
            // Nearly always: the frame's iovecs straight from the host addresses the chain's
            // check kept, with no lookup.
            if unsafe chain.appendReadableIOVectors(from: UInt64(NetHeader.size), in: memory, to: &vectors) { return }
            do throws(ChainAccessError) {
                for unsafe buffer in unsafe try reader.hostBuffers(UInt64(frameLength)) {
                    unsafe vectors.append(unsafe iovec(iov_base: buffer.baseAddress, iov_len: buffer.count))
                }
            } catch {
                throw .malformed("\(error)")
            }
        }
    }
}

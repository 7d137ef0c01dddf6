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
    }

    /// The shortest frame a backend takes: an Ethernet header.
    static let minimumFrameLength = 14

    private let backend: any NetBackend
    private let counters: NetCounters
    private let events: GuestEventLog
    private let budget: NotificationBudget
    private let state = Mutex(State())

    init(backend: any NetBackend, counters: NetCounters, events: GuestEventLog, budget: NotificationBudget) {
        self.backend = backend
        self.counters = counters
        self.events = events
        self.budget = budget
    }

    /// Starts sending what the driver queues on `queue`.
    func start(_ queue: LockedVirtqueue, features: VirtioFeatures, frameLimit: Int) {
        state.withLock { $0 = State(queue: queue, features: features, frameLimit: frameLimit) }
    }

    /// Drops the queue.
    func stop() {
        state.withLock { $0 = State() }
    }

    /// Sends the frames the driver queued, at most a budget of them (the transport resumes the
    /// rest behind other work).
    func transmitQueued() {
        // Holding the lock while sending makes stop() wait for this.
        state.withLock { state in
            guard let queue = state.queue else { return }
            let memory = queue.memory
            queue.processAvailable(budget: budget) { chain in
                transmit(chain, in: memory, state)
                return .used(length: 0)
            }
        }
    }

    private func transmit(_ chain: DescriptorChain, in memory: any GuestMemory, _ state: State) {
        do throws(TransmitRefusal) {
            try send(chain, in: memory, state)
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

    private func send(_ chain: DescriptorChain, in memory: any GuestMemory, _ state: State) throws(TransmitRefusal) {
        guard chain.writableLength == 0 else { throw .malformed("the chain has device-writable descriptors") }
        guard chain.readableLength >= UInt64(NetHeader.size + Self.minimumFrameLength) else {
            throw .malformed("\(chain.readableLength) bytes is less than a header and an Ethernet header")
        }
        guard chain.readableLength <= UInt64(state.frameLimit) else {
            throw .malformed("\(chain.readableLength) bytes is more than the \(state.frameLimit) allowed")
        }
        let frameLength = Int(chain.readableLength) - NetHeader.size
        var reader = chain.reader(in: memory)
        var header: NetHeader
        let buffers: [UnsafeMutableRawBufferPointer]
        do {
            guard let copied = NetHeader(bytes: try reader.readBytes(NetHeader.size)) else {
                throw TransmitRefusal.malformed("no header")
            }
            header = try copied.validatedForTransmit(frameLength: frameLength, negotiated: state.features)
            buffers = try reader.hostBuffers(UInt64(frameLength))
        } catch let error as TransmitRefusal {
            throw error
        } catch {
            throw .malformed("\(error)")
        }
        // DATA_VALID means something only on receive; the other end must not take it as said.
        header.flags &= ~NetHeader.dataValid
        var headerBytes = header.bytes
        let sent = headerBytes.withUnsafeMutableBytes { headerBuffer -> Result<Bool, NetBackendError> in
            var vectors = [iovec(iov_base: headerBuffer.baseAddress, iov_len: headerBuffer.count)]
            vectors += buffers.map { iovec(iov_base: $0.baseAddress, iov_len: $0.count) }
            return Result { () throws(NetBackendError) in
                try vectors.withUnsafeBufferPointer { vectors throws(NetBackendError) in try backend.transmit(vectors) }
            }
        }
        switch sent {
        case .success(true):
            counters.transmittedFrames.add(1, ordering: .relaxed)
            counters.transmittedBytes.add(UInt64(frameLength), ordering: .relaxed)
        case .success(false):
            throw .backendFull
        case let .failure(error):
            throw .backend(error)
        }
    }
}

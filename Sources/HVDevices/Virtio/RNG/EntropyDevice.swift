import Glibc
import HVCore
import Logging

/// virtio-rng (virtio 1.2, section 5.4): one queue of device-writable buffers that the device
/// fills from the host's getrandom(2).
///
/// Each request is filled up to ``maxBytesPerRequest``, so one huge buffer cannot keep a
/// thread busy for long; the driver asks again for more.
public final class EntropyDevice: VirtioDevice {
    /// The most bytes one request receives.
    public let maxBytesPerRequest: UInt32
    /// One queue (requestq) of this size.
    public let queueMaxSizes: [UInt16]
    private let queue = Locked<LockedVirtqueue?>(nil)
    private let logger: Logger
    /// Guest-caused events, logged rate-limited and counted.
    public let guestEvents: GuestEventLog

    /// An entropy device whose requests are filled from the host's getrandom, at most `maxBytesPerRequest` bytes each.
    public init(queueSize: UInt16 = 256, maxBytesPerRequest: UInt32 = 64 << 10,
                logger: Logger = Logger(label: "hvkit.virtio-rng")) {
        queueMaxSizes = [queueSize]
        self.maxBytesPerRequest = maxBytesPerRequest
        self.logger = logger
        guestEvents = GuestEventLog(logger: logger)
    }

    /// ``VirtioDeviceType/entropy`` (4).
    public var deviceType: VirtioDeviceType { .entropy }
    /// No device features: only the transport's.
    public var offeredFeatures: VirtioFeatures { .transportDefaults }
    /// virtio-rng has no configuration space.
    public var configuration: [UInt8] { [] }

    /// Takes the request queue.
    public func activate(_ activation: VirtioActivation) throws(VirtioDeviceError) {
        let requests = try activation.queue(0)
        queue.withLock { $0 = requests }
    }

    /// Fills every writable buffer the driver queued with random bytes.
    public func queueNotified(_ index: Int) {
        // Holding the lock while serving makes reset() wait for a request under way.
        queue.withLock { queue in
            guard let queue else { return }
            queue.processAvailable { chain in .used(length: fill(chain, in: queue.memory)) }
        }
    }

    /// Drops the queue.
    public func reset() {
        queue.withLock { $0 = nil }
    }

    private func fill(_ chain: DescriptorChain, in memory: any GuestMemory) -> UInt32 {
        var writer = chain.writer(in: memory)
        let count = min(writer.remaining, UInt64(maxBytesPerRequest))
        guard count > 0 else { return 0 }
        let buffers: [UnsafeMutableRawBufferPointer]
        do {
            unsafe buffers = unsafe try writer.hostBuffers(count)
        } catch {
            guestEvents.record("refused-request", "virtio-rng request refused", metadata: ["error": "\(error)"])
            return 0
        }
        // Only whole buffers count as written if getrandom fails part way.
        var total = 0
        for unsafe buffer in unsafe buffers {
            do {
                // SAFETY: buffer is guest RAM the queue checked writable; the queue keeps memory alive.
                unsafe try HostRandom.fill(buffer)
            } catch {
                logger.error("getrandom failed", metadata: ["errno": "\(error)"])
                return UInt32(total)
            }
            total += buffer.count
        }
        return UInt32(total)
    }
}

/// The entropy device answers every request while it is notified, so it holds nothing and
/// saves nothing.
extension EntropyDevice: SnapshotStateful {
    /// The version of the state ``saveState(to:)`` writes.
    public var snapshotVersion: UInt16 { 1 }

    /// Writes the state a restore needs.
    public func saveState(to encoder: inout SnapshotEncoder) {}

    /// Takes on a saved state, refusing values that cannot be right.
    public func restoreState(from decoder: inout SnapshotDecoder, version: UInt16) throws(SnapshotError) {
        try decoder.expectEnd()
    }
}

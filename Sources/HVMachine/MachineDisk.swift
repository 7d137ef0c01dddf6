import HVCore
import HVDevices
import SystemPackage

/// How a disk's requests reach its file.
public enum DiskEngine: String, Sendable, Hashable, CaseIterable {
    /// Linux AIO (libaio), completions on the machine's event loop: requests overlap.
    case aio
    /// io_uring (`UringBlockBackend`): requests overlap, what completes while they are
    /// submitted is delivered on the submitting thread, and the ring can touch only the disk.
    /// Refused, with the reason, where the host disables io_uring.
    case uring
    /// Plain preadv/pwritev on the thread that was notified: simple, one request at a time.
    case sync
}

/// A virtio-blk disk as a ``Machine`` added it: the image file, the device, and its slot.
public final class MachineDisk: Sendable {
    /// The image file.
    public let image: DiskImage
    /// The virtio-blk device model.
    public let device: BlockDevice
    /// Where the machine placed it.
    public let slot: VirtioSlot

    init(image: DiskImage, device: BlockDevice, slot: VirtioSlot) {
        self.image = image
        self.device = device
        self.slot = slot
    }

    /// The machine's name for the disk.
    public var name: String { slot.name }

    /// Makes everything the guest wrote so far durable on the host (fdatasync). Requests still
    /// in flight are not waited for; `wait()` does both, in order, at shutdown.
    public func flush() throws(Errno) {
        try image.flush()
    }
}

extension Machine {
    /// Adds a virtio-blk disk backed by the file (or block device) at `path`.
    /// - Parameters:
    ///   - path: the image file or block device.
    ///   - readOnly: the guest sees a read-only disk (VIRTIO_BLK_F_RO) and the device refuses
    ///     writes from a driver that ignores it.
    ///   - cacheMode: how writes reach the file (`BlockCacheMode`).
    ///   - engine: how requests are served (``DiskEngine``).
    ///   - rateLimit: bandwidth and operations limits (Firecracker's token buckets); a throttled
    ///     request waits on the event loop's timer, in order, and is never dropped.
    ///   - name: how errors and reports name it; default "diskN".
    @discardableResult
    public func addDisk(path: String, readOnly: Bool = false, cacheMode: BlockCacheMode = .writeback,
                        engine: DiskEngine = .aio, rateLimit: RateLimit? = nil, name: String? = nil) throws(MachineError) -> MachineDisk {
        let label = "virtio-blk " + (name ?? "disk\(disks.count)")
        let image = try during(.openDisk, device: label) { try DiskImage(path: path, readOnly: readOnly, cacheMode: cacheMode) }
        let backend: any BlockBackend
        switch engine {
        case .aio: backend = try during(.openDisk, device: label) { try AIOBlockBackend(disk: image, eventLoop: events) }
        case .uring: backend = try during(.openDisk, device: label) { try UringBlockBackend(disk: image, eventLoop: events) }
        case .sync: backend = SyncBlockBackend(disk: image)
        }
        let device = BlockDevice(backend: backend, rateLimiter: rateLimit.map { RateLimiter($0) }, eventLoop: events)
        let slot = try add(virtio: device, name: label)
        let disk = MachineDisk(image: image, device: device, slot: slot)
        state.withLock { $0.disks.append(disk) }
        return disk
    }
}

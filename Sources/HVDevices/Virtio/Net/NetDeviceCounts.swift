import Synchronization

/// What a virtio-net device has moved and dropped since it was created.
///
/// Transmitted frames are added once per batch, after the batch went out: a peer can see a
/// frame a moment before these counts include it.
public struct NetDeviceCounts: Sendable, Hashable {
    /// Frames written into the guest's receive buffers.
    public var receivedFrames: UInt64
    /// Their bytes, without the virtio-net header.
    public var receivedBytes: UInt64
    /// Frames the backend took from the guest.
    public var transmittedFrames: UInt64
    /// Their bytes, without the virtio-net header.
    public var transmittedBytes: UInt64
    /// Frames from the backend that were dropped: larger than the guest's buffers or the
    /// negotiated maximum, or shorter than a header.
    public var droppedReceiveFrames: UInt64
    /// Frames from the guest that were dropped: malformed (a header asking for what was not
    /// negotiated, a wrong length) or refused by a full backend.
    public var droppedTransmitFrames: UInt64
}

/// The device's counters, shared by its receive and transmit paths.
final class NetCounters: Sendable {
    let receivedFrames = Atomic<UInt64>(0)
    let receivedBytes = Atomic<UInt64>(0)
    let transmittedFrames = Atomic<UInt64>(0)
    let transmittedBytes = Atomic<UInt64>(0)
    let droppedReceiveFrames = Atomic<UInt64>(0)
    let droppedTransmitFrames = Atomic<UInt64>(0)

    var snapshot: NetDeviceCounts {
        NetDeviceCounts(receivedFrames: receivedFrames.load(ordering: .relaxed),
                        receivedBytes: receivedBytes.load(ordering: .relaxed),
                        transmittedFrames: transmittedFrames.load(ordering: .relaxed),
                        transmittedBytes: transmittedBytes.load(ordering: .relaxed),
                        droppedReceiveFrames: droppedReceiveFrames.load(ordering: .relaxed),
                        droppedTransmitFrames: droppedTransmitFrames.load(ordering: .relaxed))
    }
}

/// The largest frame, header included, that may cross the device in one direction: a whole
/// 64 KiB IP packet with its Ethernet and VLAN headers when segmentation offload is on,
/// otherwise one of `mtu` bytes.
func netFrameLimit(mtu: UInt16, segmentationOffload: Bool) -> Int {
    let linkHeaders = 14 + 4
    return NetHeader.size + linkHeaders + (segmentationOffload ? Int(UInt16.max) : Int(mtu))
}

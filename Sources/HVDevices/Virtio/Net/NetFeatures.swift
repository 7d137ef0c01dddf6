extension VirtioFeatures {
    /// VIRTIO_NET_F_CSUM (0): the device takes frames with a partial checksum to finish.
    public static let netChecksum = bit(0)
    /// VIRTIO_NET_F_GUEST_CSUM (1): the driver takes frames with a partial checksum.
    public static let netGuestChecksum = bit(1)
    /// VIRTIO_NET_F_MTU (3): the configuration's mtu is valid.
    public static let netMTU = bit(3)
    /// VIRTIO_NET_F_MAC (5): the configuration's mac is the device's address.
    public static let netMAC = bit(5)
    /// VIRTIO_NET_F_GUEST_TSO4 (7): the driver takes TCP/IPv4 segmentation offload frames.
    public static let netGuestTSO4 = bit(7)
    /// VIRTIO_NET_F_GUEST_TSO6 (8): the driver takes TCP/IPv6 segmentation offload frames.
    public static let netGuestTSO6 = bit(8)
    /// VIRTIO_NET_F_GUEST_ECN (9): the driver takes TSO frames with ECN.
    public static let netGuestECN = bit(9)
    /// VIRTIO_NET_F_GUEST_UFO (10): the driver takes UDP fragmentation offload frames.
    public static let netGuestUFO = bit(10)
    /// VIRTIO_NET_F_HOST_TSO4 (11): the device takes TCP/IPv4 segmentation offload frames.
    public static let netHostTSO4 = bit(11)
    /// VIRTIO_NET_F_HOST_TSO6 (12): the device takes TCP/IPv6 segmentation offload frames.
    public static let netHostTSO6 = bit(12)
    /// VIRTIO_NET_F_HOST_ECN (13): the device takes TSO frames with ECN.
    public static let netHostECN = bit(13)
    /// VIRTIO_NET_F_HOST_UFO (14): the device takes UDP fragmentation offload frames.
    public static let netHostUFO = bit(14)
    /// VIRTIO_NET_F_MRG_RXBUF (15): a received frame may span several receive chains.
    public static let netMergeableReceiveBuffers = bit(15)
    /// VIRTIO_NET_F_STATUS (16): the configuration's status (link up) is valid.
    public static let netStatus = bit(16)
}

/// TUN_F_* flags for TUNSETOFFLOAD (linux/if_tun.h): what a tap may hand the VMM, and so the
/// guest, without finishing it first.
public struct TapOffloads: OptionSet, Hashable, Sendable {
    /// The flags.
    public let rawValue: UInt32
    /// Flags from their bits.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// TUN_F_CSUM: frames with a partial checksum.
    public static let checksum = TapOffloads(rawValue: 0x01)
    /// TUN_F_TSO4: TCP/IPv4 segmentation offload.
    public static let tso4 = TapOffloads(rawValue: 0x02)
    /// TUN_F_TSO6: TCP/IPv6 segmentation offload.
    public static let tso6 = TapOffloads(rawValue: 0x04)
    /// TUN_F_TSO_ECN: TSO with ECN.
    public static let tsoECN = TapOffloads(rawValue: 0x08)
    /// TUN_F_UFO: UDP fragmentation offload.
    public static let ufo = TapOffloads(rawValue: 0x10)

    /// What the tap may pass to a guest whose driver accepted `features`: the guest-side
    /// offloads it negotiated (GUEST_CSUM, GUEST_TSO4/6, GUEST_ECN, GUEST_UFO), each only with
    /// the ones it depends on, as the virtio specification requires of a driver (5.1.3.1) and
    /// a device must not assume of a hostile one.
    public init(negotiated features: VirtioFeatures) {
        var offloads: TapOffloads = []
        guard features.contains(.netGuestChecksum) else {
            // Every segmentation offload needs checksum offload.
            self = offloads
            return
        }
        offloads.insert(.checksum)
        if features.contains(.netGuestTSO4) { offloads.insert(.tso4) }
        if features.contains(.netGuestTSO6) { offloads.insert(.tso6) }
        if features.contains(.netGuestECN), !offloads.isDisjoint(with: [.tso4, .tso6]) { offloads.insert(.tsoECN) }
        if features.contains(.netGuestUFO) { offloads.insert(.ufo) }
        self = offloads
    }
}

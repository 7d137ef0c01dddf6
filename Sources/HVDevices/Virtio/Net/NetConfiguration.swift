/// The virtio-net configuration space (struct virtio_net_config) that HVKit fills: mac,
/// status, max_virtqueue_pairs, mtu, speed and duplex, little-endian.
public struct NetConfiguration: Hashable, Sendable {
    /// The bytes the device exposes (up to and including duplex, padded).
    public static let size = 20
    /// VIRTIO_NET_S_LINK_UP.
    public static let linkUp: UInt16 = 1

    /// The device's MAC address.
    public var mac: [UInt8]
    /// Whether the link is up.
    public var linkIsUp: Bool
    /// The largest frame payload the driver should send (bytes above the Ethernet header).
    public var mtu: UInt16
    /// The link speed in Mb/s reported (0xFFFF_FFFF: unknown).
    public var speed: UInt32 = 0xFFFF_FFFF
    /// Full duplex (1), half (0) or unknown (0xFF).
    public var duplex: UInt8 = 0xFF

    /// A configuration for `mac` (6 bytes; others are padded or cut), up, with `mtu`.
    public init(mac: [UInt8], mtu: UInt16 = 1500, linkIsUp: Bool = true) {
        self.mac = Array((mac + [UInt8](repeating: 0, count: 6)).prefix(6))
        self.mtu = mtu
        self.linkIsUp = linkIsUp
    }

    /// The configuration space.
    public var bytes: [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.size)
        bytes.replaceSubrange(0..<6, with: mac)
        let status: UInt16 = linkIsUp ? Self.linkUp : 0
        for (offset, word) in [(6, status), (8, UInt16(1)), (10, mtu)] {
            bytes[offset] = UInt8(truncatingIfNeeded: word)
            bytes[offset + 1] = UInt8(truncatingIfNeeded: word >> 8)
        }
        for index in 0..<4 { bytes[12 + index] = UInt8(truncatingIfNeeded: speed >> (8 * UInt32(index))) }
        bytes[16] = duplex
        return bytes
    }
}

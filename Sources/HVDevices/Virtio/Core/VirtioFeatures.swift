/// A set of virtio feature bits (64 of them: the transport reads and writes them 32 at a time).
///
/// Bits 0–23 belong to the device type (see each device's extension, such as
/// ``VirtioFeatures/blockReadOnly``); bits 24–40 are transport and ring features.
public struct VirtioFeatures: OptionSet, Hashable, Sendable, CustomStringConvertible {
    /// The feature bits.
    public let rawValue: UInt64
    /// Features from their bits.
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// The feature with bit number `bit` (0–63).
    @inlinable public static func bit(_ bit: Int) -> VirtioFeatures { VirtioFeatures(rawValue: 1 << UInt64(bit & 63)) }

    /// VIRTIO_F_INDIRECT_DESC (28): descriptors may point at a table of further descriptors.
    public static let indirectDescriptors = bit(28)
    /// VIRTIO_F_EVENT_IDX (29): used_event / avail_event notification suppression.
    public static let eventIndex = bit(29)
    /// VIRTIO_F_VERSION_1 (32): a modern (non-legacy) device. HVKit offers only modern devices
    /// and refuses a driver that does not accept this bit.
    public static let version1 = bit(32)
    /// VIRTIO_F_ACCESS_PLATFORM (33): the device sits behind an IOMMU. Never offered.
    public static let accessPlatform = bit(33)
    /// VIRTIO_F_RING_PACKED (34): packed virtqueues. Never offered; HVKit has split queues.
    public static let ringPacked = bit(34)

    /// The features every HVKit virtio device offers on top of its own.
    public static let transportDefaults: VirtioFeatures = [.version1, .indirectDescriptors, .eventIndex]

    /// The 32 bits of page `page` (0: bits 0–31, 1: bits 32–63); 0 for any other page.
    @inlinable public func word(_ page: UInt32) -> UInt32 {
        switch page {
        case 0: UInt32(truncatingIfNeeded: rawValue)
        case 1: UInt32(truncatingIfNeeded: rawValue >> 32)
        default: 0
        }
    }

    /// This set with page `page`'s 32 bits replaced by `value`; pages past 1 change nothing.
    @inlinable public func replacingWord(_ page: UInt32, with value: UInt32) -> VirtioFeatures {
        switch page {
        case 0: VirtioFeatures(rawValue: (rawValue & 0xFFFF_FFFF_0000_0000) | UInt64(value))
        case 1: VirtioFeatures(rawValue: (rawValue & 0x0000_0000_FFFF_FFFF) | (UInt64(value) << 32))
        default: self
        }
    }

    /// The bits in hexadecimal.
    public var description: String { "0x" + String(rawValue, radix: 16) }
}

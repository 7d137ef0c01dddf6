/// One entry of a split virtqueue's descriptor table, exactly as the guest lays it out
/// (16 bytes, little-endian; HVKit's hosts are little-endian).
public struct Descriptor: BitwiseCopyable, Hashable, Sendable {
    /// Guest-physical address of the buffer (or of an indirect table).
    public var address: UInt64
    /// Length of the buffer in bytes.
    public var length: UInt32
    /// ``Flags``.
    public var flags: UInt16
    /// The next descriptor's index when ``Flags/next`` is set.
    public var next: UInt16

    /// A descriptor for `length` bytes at guest address `address`.
    public init(address: UInt64, length: UInt32, flags: Flags = [], next: UInt16 = 0) {
        self.address = address
        self.length = length
        self.flags = flags.rawValue
        self.next = next
    }

    /// VIRTQ_DESC_F_* bits.
    public struct Flags: OptionSet, Hashable, Sendable {
        /// The flags as bits.
        public let rawValue: UInt16
        /// Flags from their bits.
        public init(rawValue: UInt16) { self.rawValue = rawValue }
        /// VIRTQ_DESC_F_NEXT: the chain goes on at ``Descriptor/next``.
        public static let next = Flags(rawValue: 1)
        /// VIRTQ_DESC_F_WRITE: the device writes this buffer (otherwise it reads it).
        public static let write = Flags(rawValue: 2)
        /// VIRTQ_DESC_F_INDIRECT: the buffer is a table of descriptors.
        public static let indirect = Flags(rawValue: 4)
    }

    /// ``flags`` as a ``Flags`` set.
    public var descriptorFlags: Flags { Flags(rawValue: flags) }

    /// The size of a descriptor in guest memory.
    public static let size: UInt64 = 16
}

/// The split-ring layout sizes and alignments of virtio 1.2, section 2.7.
enum SplitRingLayout {
    static let descriptorTableAlignment: UInt64 = 16
    static let availableRingAlignment: UInt64 = 2
    static let usedRingAlignment: UInt64 = 4

    static func descriptorTableSize(_ queueSize: UInt16) -> UInt64 { Descriptor.size * UInt64(queueSize) }
    /// flags, idx, ring[size], used_event.
    static func availableRingSize(_ queueSize: UInt16) -> UInt64 { 6 + 2 * UInt64(queueSize) }
    /// flags, idx, ring[size] of (id, len), avail_event.
    static func usedRingSize(_ queueSize: UInt16) -> UInt64 { 6 + 8 * UInt64(queueSize) }

    /// VIRTQ_AVAIL_F_NO_INTERRUPT.
    static let availableNoInterrupt: UInt16 = 1
    /// VIRTQ_USED_F_NO_NOTIFY.
    static let usedNoNotify: UInt16 = 1
}

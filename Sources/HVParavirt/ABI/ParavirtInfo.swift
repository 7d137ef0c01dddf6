/// The block ``HypercallNumber/info`` writes at the guest address in arg0 (64 bytes,
/// little-endian; `struct hv_info` in the C header).
///
/// | offset | field | meaning |
/// |---|---|---|
/// | 0 | u32 abi_version | ``HypercallABI/version`` |
/// | 4 | u32 sector_size | block sector size, 0 without a disk |
/// | 8 | u64 features | ``ParavirtFeatures`` |
/// | 16 | u64 memory_size | bytes of guest RAM |
/// | 24 | u64 block_capacity | disk size in bytes, 0 without a disk |
/// | 32 | u8 mac[6] | the network's MAC address |
/// | 38 | u16 mtu | the network's MTU, 0 without a network |
/// | 40 | u32 max_transfer | ``HypercallABI/maximumBlockTransfer`` |
/// | 44 | u32 max_small_transfer | ``HypercallABI/maximumSmallTransfer`` |
/// | 48 | u64 reserved[2] | zero |
public struct ParavirtInfo: Sendable, Hashable {
    /// Bytes in the block.
    public static let size = 64
    /// Offsets of the block's fields (see the table above).
    public enum Offset {
        /// u32 abi_version.
        public static let abiVersion = 0
        /// u32 sector_size.
        public static let sectorSize = 4
        /// u64 features.
        public static let features = 8
        /// u64 memory_size.
        public static let memorySize = 16
        /// u64 block_capacity.
        public static let blockCapacity = 24
        /// u8 mac[6].
        public static let mac = 32
        /// u16 mtu.
        public static let mtu = 38
        /// u32 max_transfer.
        public static let maximumTransfer = 40
        /// u32 max_small_transfer.
        public static let maximumSmallTransfer = 44
        /// The first reserved byte (zero up to the end).
        public static let reserved = 48
    }

    /// What the installed services offer.
    public var features: ParavirtFeatures = []
    /// Bytes of guest RAM (filled in by the dispatcher).
    public var memorySize: UInt64 = 0
    /// The block sector size, 0 without a disk.
    public var sectorSize: UInt32 = 0
    /// The disk's size in bytes, 0 without a disk.
    public var blockCapacity: UInt64 = 0
    /// The network's MAC address, zeros without a network.
    public var mac: [UInt8] = [0, 0, 0, 0, 0, 0]
    /// The network's MTU, 0 without a network.
    public var mtu: UInt16 = 0

    /// An empty block: no services yet.
    public init() {}

    /// The 64 bytes the guest receives.
    public var encoded: [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.size)
        func put<T: FixedWidthInteger>(_ value: T, _ offset: Int) {
            for index in 0..<MemoryLayout<T>.size { bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
        }
        put(HypercallABI.version, Offset.abiVersion)
        put(sectorSize, Offset.sectorSize)
        put(features.rawValue, Offset.features)
        put(memorySize, Offset.memorySize)
        put(blockCapacity, Offset.blockCapacity)
        for (index, byte) in mac.prefix(6).enumerated() { bytes[Offset.mac + index] = byte }
        put(mtu, Offset.mtu)
        put(UInt32(HypercallABI.maximumBlockTransfer), Offset.maximumTransfer)
        put(UInt32(HypercallABI.maximumSmallTransfer), Offset.maximumSmallTransfer)
        return bytes
    }
}

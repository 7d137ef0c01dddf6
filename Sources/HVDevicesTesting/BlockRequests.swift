import HVCore
import HVDevices

/// The driver's side of a virtio-blk request (virtio 1.2, section 5.2.6), for tests and
/// benchmarks that play the guest.
public enum VirtioBlockRequest {
    /// Request types (VIRTIO_BLK_T_*).
    public enum RequestType: UInt32, Sendable, CaseIterable {
        case read = 0, write = 1, flush = 4, getID = 8, discard = 11, writeZeroes = 13
    }

    /// The status byte the device writes last (VIRTIO_BLK_S_*).
    public enum Status: UInt8, Sendable {
        case ok = 0, ioError = 1, unsupported = 2
    }

    /// Bytes in the request header: type, reserved, sector.
    public static let headerSize: UInt32 = 16

    /// Writes a request header (`type`, `sector`) at `address` and returns it as a
    /// device-readable buffer for ``DriverQueue/addChain(_:)``.
    public static func writeHeader(_ type: RequestType, sector: UInt64, at address: GuestAddress,
                                   in memory: some GuestMemory) throws(GuestMemoryError) -> (address: GuestAddress, length: UInt32, writable: Bool) {
        try writeHeader(rawType: type.rawValue, sector: sector, at: address, in: memory)
    }

    /// ``writeHeader(_:sector:at:in:)`` with any type number, for requests a device must refuse.
    public static func writeHeader(rawType: UInt32, sector: UInt64, at address: GuestAddress,
                                   in memory: some GuestMemory) throws(GuestMemoryError) -> (address: GuestAddress, length: UInt32, writable: Bool) {
        try memory.write(rawType.littleEndian, at: address)
        try memory.write(UInt32(0), at: try address.checkedAdd(4))
        try memory.write(sector.littleEndian, at: try address.checkedAdd(8))
        return (address, headerSize, false)
    }
}

/// A virtio-blk device's configuration space as the driver reads it through the transport.
public struct VirtioBlockConfiguration: Sendable, Hashable {
    /// The capacity in 512-byte sectors.
    public let capacity: UInt64
    /// The largest number of data segments in a request (seg_max).
    public let segmentMax: UInt32
    /// The logical block size (blk_size).
    public let blockSize: UInt32
    /// The most sectors a discard may cover (max_discard_sectors).
    public let maxDiscardSectors: UInt32
    /// The most sectors a write-zeroes may cover (max_write_zeroes_sectors).
    public let maxWriteZeroesSectors: UInt32

    /// Reads the fields through `transport`'s device-specific configuration registers.
    public init(reading transport: VirtioMMIOTransport) {
        func word(_ offset: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: transport.read(offset: 0x100 + offset, width: .doubleWord)) }
        capacity = UInt64(word(0)) | UInt64(word(4)) << 32
        segmentMax = word(12)
        blockSize = word(20)
        maxDiscardSectors = word(36)
        maxWriteZeroesSectors = word(48)
    }
}

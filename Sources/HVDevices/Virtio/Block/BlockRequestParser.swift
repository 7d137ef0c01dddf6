import HVCore

/// virtio-blk request types (virtio 1.2, 5.2.6).
enum BlockRequestType: UInt32 {
    case read = 0
    case write = 1
    case flush = 4
    case getID = 8
    case discard = 11
    case writeZeroes = 13
}

/// What the device does with one chain.
enum ParsedBlockRequest {
    /// No writable status byte: nothing can be reported, so the queue breaks (NEEDS_RESET).
    case unanswerable(reason: String)
    /// Answered at once with `status`; `usedLength` counts bytes written including the status.
    case immediate(status: BlockStatus, statusAddress: GuestAddress, usedLength: UInt32)
    /// Goes to the backend; on success the used length is `usedLength`, otherwise 1.
    case io(BlockOperation, statusAddress: GuestAddress, usedLength: UInt32)
}

/// Turns a descriptor chain into a checked block request: header copied once, data lengths in
/// whole sectors, every sector range checked against the capacity with overflow checks, and
/// writes to a read-only disk refused before any data moves.
struct BlockRequestParser {
    static let headerSize: UInt64 = 16
    static let discardSegmentSize: UInt64 = 16
    static let identifierLength = 20
    /// The most sectors one DISCARD or WRITE_ZEROES may cover (32 MiB), advertised as
    /// max_discard_sectors and max_write_zeroes_sectors and enforced here: the fallback for a
    /// file system without a zero-range fallocate writes the zeros, on the notified thread.
    static let maximumZeroingSectors: UInt32 = 65_536

    let capacity: UInt64
    let isReadOnly: Bool
    let supportsDiscard: Bool
    let identifier: [UInt8]

    func parse(_ chain: DescriptorChain, in memory: any GuestMemory) -> ParsedBlockRequest {
        // The status byte is the last writable byte of the chain.
        guard let last = chain.segments.last, last.isWritable else {
            return .unanswerable(reason: "no writable status byte")
        }
        let statusAddress = GuestAddress(last.address.rawValue + UInt64(last.length) - 1)
        func fail(_ status: BlockStatus) -> ParsedBlockRequest {
            .immediate(status: status, statusAddress: statusAddress, usedLength: 1)
        }
        var reader = chain.reader(in: memory)
        var writer = chain.writer(in: memory)
        // struct virtio_blk_outhdr { le32 type; le32 reserved; le64 sector; }, read at once.
        guard reader.remaining >= Self.headerSize,
              let (rawType, _, sector) = try? reader.read((UInt32, UInt32, UInt64).self) else {
            return fail(.ioError)
        }
        let dataIn = writer.remaining - 1
        let dataOut = reader.remaining
        guard let type = BlockRequestType(rawValue: rawType) else { return fail(.unsupported) }

        switch type {
        case .read:
            guard dataIn < UInt64(UInt32.max), let offset = byteRange(sector: sector, length: dataIn) else { return fail(.ioError) }
            guard dataIn > 0, let buffers = unsafe try? writer.hostBuffers(dataIn) else {
                return dataIn == 0 ? .immediate(status: .ok, statusAddress: statusAddress, usedLength: 1) : fail(.ioError)
            }
            return unsafe .io(.read(offset: offset, into: GuestBuffers(buffers)), statusAddress: statusAddress, usedLength: UInt32(dataIn + 1))
        case .write:
            guard !isReadOnly else { return fail(.ioError) }
            guard let offset = byteRange(sector: sector, length: dataOut) else { return fail(.ioError) }
            guard dataOut > 0, let buffers = unsafe try? reader.hostBuffers(dataOut) else {
                return dataOut == 0 ? .immediate(status: .ok, statusAddress: statusAddress, usedLength: 1) : fail(.ioError)
            }
            return unsafe .io(.write(offset: offset, from: GuestBuffers(buffers)), statusAddress: statusAddress, usedLength: 1)
        case .flush:
            return .io(.flush, statusAddress: statusAddress, usedLength: 1)
        case .getID:
            let count = min(Int(dataIn), Self.identifierLength)
            guard count > 0, (try? writer.write(Array(identifier.prefix(count)))) != nil else { return fail(.ioError) }
            return .immediate(status: .ok, statusAddress: statusAddress, usedLength: UInt32(count + 1))
        case .discard, .writeZeroes:
            guard !isReadOnly else { return fail(.ioError) }
            guard supportsDiscard else { return fail(.unsupported) }
            // One segment per request: the device advertises max_discard_seg = 1.
            guard dataOut == Self.discardSegmentSize,
                  let firstSector = try? reader.read(UInt64.self),
                  let sectorCount = try? reader.read(UInt32.self),
                  let flags = try? reader.read(UInt32.self) else { return fail(.ioError) }
            let unmap = flags & 1 != 0
            // Discard takes no flags; write-zeroes takes only UNMAP.
            guard flags & ~1 == 0, !(type == .discard && unmap) else { return fail(.unsupported) }
            // Larger than the device advertised: a driver that honours the limit never sends it.
            guard sectorCount <= Self.maximumZeroingSectors else { return fail(.ioError) }
            let length = UInt64(sectorCount) * DiskImage.sectorSize
            guard let offset = byteRange(sector: firstSector, length: length) else { return fail(.ioError) }
            guard length > 0 else { return .immediate(status: .ok, statusAddress: statusAddress, usedLength: 1) }
            let operation: BlockOperation = type == .discard
                ? .discard(offset: offset, length: length)
                : .writeZeroes(offset: offset, length: length, mayUnmap: unmap)
            return .io(operation, statusAddress: statusAddress, usedLength: 1)
        }
    }

    /// The byte offset of `sector` if `length` bytes from there are whole sectors inside the
    /// disk; nil on a partial sector, an overflow or a range past the end.
    func byteRange(sector: UInt64, length: UInt64) -> UInt64? {
        guard length % DiskImage.sectorSize == 0 else { return nil }
        let (offset, overflow) = sector.multipliedReportingOverflow(by: DiskImage.sectorSize)
        guard !overflow, offset <= capacity, length <= capacity - offset else { return nil }
        return offset
    }
}

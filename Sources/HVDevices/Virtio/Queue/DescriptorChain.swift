import Glibc
import HVCore

/// One buffer of a chain, already checked to be guest RAM (writable RAM when the device writes
/// it) with no overflow.
public struct ChainSegment: Hashable, Sendable {
    /// Where the buffer starts in guest memory.
    public let address: GuestAddress
    /// Its length in bytes.
    public let length: UInt32
    /// Whether the device writes this buffer (VIRTQ_DESC_F_WRITE).
    public let isWritable: Bool
    /// Where a device-readable buffer starts in the host, as the check of the chain found it,
    /// when one region holds the buffer: the chain's readers then translate it without a
    /// second lookup (see ``DescriptorChain/reader(in:)``). Nil for device-writable buffers,
    /// whose translation goes through the memory each time so that a write log sees the write.
    let hostAddress: HostAddress?

    /// Segments are equal when they describe the same guest buffer.
    public static func == (lhs: ChainSegment, rhs: ChainSegment) -> Bool {
        lhs.address == rhs.address && lhs.length == rhs.length && lhs.isWritable == rhs.isWritable
    }

    /// Hashes the guest buffer the segment describes.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(address)
        hasher.combine(length)
        hasher.combine(isWritable)
    }
}

/// A host address inside guest RAM, kept with a chain's segment between its check and its use.
/// SAFETY: it is turned back into a pointer only for the mapping whose lookup produced it (the
/// chain's ``HostMappingIdentity``, compared by ``DescriptorChain/reader(in:)`` and
/// ``DescriptorChain/readableIOVectors(from:in:into:at:)``), while that memory is held by the
/// reader or the caller.
@safe struct HostAddress: Sendable {
    let bits: UInt

    init(_ pointer: UnsafeMutableRawPointer) {
        bits = UInt(bitPattern: pointer)
    }

    /// The pointer, `offset` bytes further on.
    func pointer(advancedBy offset: UInt64) -> UnsafeMutableRawPointer? {
        unsafe UnsafeMutableRawPointer(bitPattern: bits + UInt(offset))
    }
}

/// A validated descriptor chain taken from a ``SplitQueue``: the buffers the driver offered for
/// one request, device-readable ones first. Its descriptors were read from guest memory once;
/// the segments are the host's copy.
public struct DescriptorChain: Sendable {
    /// The head index, which identifies the chain when it is returned with ``SplitQueue/addUsed(head:length:in:)``.
    public let head: UInt16
    /// Every non-empty buffer, readable ones first.
    public let segments: [ChainSegment]
    /// Bytes the device may read.
    public let readableLength: UInt64
    /// Bytes the device may write.
    public let writableLength: UInt64
    /// The mapping whose lookups gave the segments' host addresses (nil: none were kept).
    let translatedBy: HostMappingIdentity?
    /// How many segments are readable: they come first (the queue refuses chains where they
    /// do not), so this is also where the writable ones start.
    let readableSegmentCount: Int

    /// A cursor over the device-readable buffers. With the memory the chain was taken in, the
    /// host addresses found when it was checked are used again.
    public func reader(in memory: any GuestMemory) -> ChainReader {
        ChainReader(memory: memory, segments: segments[..<readableSegmentCount], total: readableLength,
                    reusesTranslations: reusesTranslations(in: memory))
    }

    /// A cursor over the device-writable buffers.
    public func writer(in memory: any GuestMemory) -> ChainWriter {
        ChainWriter(memory: memory, segments: segments[readableSegmentCount...], total: writableLength)
    }

    /// Whether the segments' kept host addresses are `memory`'s own.
    private func reusesTranslations(in memory: any GuestMemory) -> Bool {
        translatedBy != nil && memory.hostMappingIdentity == translatedBy
    }

    /// Appends to `vectors` an iovec for each readable segment's bytes from `offset` (into the
    /// readable part) on, from the host addresses the chain's check kept: for a gather
    /// (`writev`) straight from guest memory with no lookup. False, with nothing appended, when
    /// `memory` is not the one that checked the chain, a segment has no kept address (it spans
    /// regions) or `offset` is beyond the readable bytes; ``ChainReader/hostBuffers(_:)`` then
    /// does the general work.
    func appendReadableIOVectors(from offset: UInt64, in memory: any GuestMemory, to vectors: inout [iovec]) -> Bool {
        guard offset <= readableLength, reusesTranslations(in: memory) else { return false }
        let start = unsafe vectors.count
        var skip = offset
        for segment in segments[..<readableSegmentCount] {
            let length = UInt64(segment.length)
            if skip >= length {
                skip -= length
                continue
            }
            guard let base = unsafe segment.hostAddress?.pointer(advancedBy: skip) else {
                unsafe vectors.removeSubrange(start...)
                return false
            }
            // SAFETY: the kept address is `memory`'s own translation of the segment, checked
            // when the chain was taken; skip < length keeps the iovec inside the segment.
            unsafe vectors.append(iovec(iov_base: base, iov_len: Int(length - skip)))
            skip = 0
        }
        return true
    }
}

/// Why a read from or a write to a chain's buffers failed.
public enum ChainAccessError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The request needs `requested` bytes but only `remaining` are left in the chain.
    case notEnoughSpace(requested: UInt64, remaining: UInt64)
    /// Guest memory refused the access (the guest remapped nothing we know of, so this is a
    /// read-only region or a bug).
    case memory(GuestMemoryError)

    /// The chain's head and buffers, for logs.
    public var description: String {
        switch self {
        case let .notEnoughSpace(requested, remaining): "\(requested) bytes asked for but the chain has \(remaining) left"
        case let .memory(error): "\(error)"
        }
    }
}

/// Walks a list of segments: the position shared by ``ChainReader`` and ``ChainWriter``.
///
/// The readers and writers walk it piece by piece (``transfer(_:in:_:)``), handing their guest
/// memory to each piece as an argument: a closure that captured it would retain and release it
/// for every access.
struct SegmentCursor {
    let segments: ArraySlice<ChainSegment>
    /// Where the cursor is: a failed take puts it back.
    struct Position {
        fileprivate var index: Int
        fileprivate var offset: UInt64 = 0
        fileprivate(set) var remaining: UInt64
    }

    var position: Position

    /// A cursor at the start of `segments`, which hold `total` bytes (summed when nil).
    init(segments: ArraySlice<ChainSegment>, total: UInt64? = nil) {
        self.segments = segments
        position = Position(index: segments.startIndex, remaining: total ?? segments.reduce(0) { $0 + UInt64($1.length) })
    }

    /// Bytes not yet taken.
    var remaining: UInt64 { position.remaining }

    /// Segments not yet wholly taken.
    var segmentsLeft: Int { segments.endIndex - position.index }

    /// The next piece of at most `limit` bytes (at least one byte is left, and `limit` > 0): its
    /// segment, where it starts in the segment, and its length.
    func nextPiece(upTo limit: UInt64) -> (segment: ChainSegment, offset: UInt64, length: UInt64) {
        let segment = segments[position.index]
        return (segment, position.offset, min(UInt64(segment.length) - position.offset, limit))
    }

    /// Moves past `length` bytes of the current segment (a piece ``nextPiece(upTo:)`` gave).
    mutating func advance(_ length: UInt64) {
        position.offset += length
        position.remaining -= length
        if position.offset == UInt64(segments[position.index].length) {
            position.index += 1
            position.offset = 0
        }
    }

    /// Moves past `count` bytes, or fails without moving when fewer are left.
    mutating func skip(_ count: UInt64) throws(ChainAccessError) {
        try require(count)
        var left = count
        while left > 0 {
            let piece = nextPiece(upTo: left)
            advance(piece.length)
            left -= piece.length
        }
    }

    /// Moves `count` bytes between the chain and a caller's buffer, piece by piece: `move` gets
    /// `memory` (an argument, not a capture, so that no piece copies it), each piece's segment,
    /// its offset there and its length, and the bytes done before it. Fails without moving when
    /// fewer bytes are left or `move` fails.
    @inline(__always)
    mutating func transfer(
        _ count: UInt64, in memory: any GuestMemory,
        _ move: (any GuestMemory, ChainSegment, _ offset: UInt64, _ length: Int, _ done: Int) throws(GuestMemoryError) -> Void
    ) throws(ChainAccessError) {
        try require(count)
        let start = position
        // At most the chain's bytes (under 2^47): these fit an Int.
        var done: UInt64 = 0
        while done < count {
            let piece = nextPiece(upTo: count - done)
            do {
                try move(memory, piece.segment, piece.offset, Int(piece.length), Int(done))
            } catch {
                position = start
                throw .memory(error)
            }
            advance(piece.length)
            done += piece.length
        }
    }

    /// Checks that `count` bytes are left.
    func require(_ count: UInt64) throws(ChainAccessError) {
        guard count <= remaining else { throw .notEnoughSpace(requested: count, remaining: remaining) }
    }
}

/// Reads the device-readable part of a chain in order. Each byte is copied out of guest memory
/// once; validate what you read in your own copy.
public struct ChainReader {
    private let memory: any GuestMemory
    private var cursor: SegmentCursor
    /// Whether the segments' host addresses came from `memory` (see ``ChainSegment``).
    private let reusesTranslations: Bool

    init(memory: any GuestMemory, segments: ArraySlice<ChainSegment>, total: UInt64, reusesTranslations: Bool) {
        self.memory = memory
        cursor = SegmentCursor(segments: segments, total: total)
        self.reusesTranslations = reusesTranslations
    }

    /// Bytes not yet read.
    public var remaining: UInt64 { cursor.remaining }

    /// Fills `buffer` from the chain.
    public mutating func read(into buffer: UnsafeMutableRawBufferPointer) throws(ChainAccessError) {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        let reuses = reusesTranslations
        try cursor.transfer(UInt64(buffer.count), in: memory) { memory, segment, offset, length, done throws(GuestMemoryError) in
            // SAFETY: a kept host address is `memory`'s own translation of the segment, which
            // this reader holds; offset + length stays inside the segment, done + length
            // inside `buffer`.
            if reuses, let source = unsafe segment.hostAddress?.pointer(advancedBy: offset) {
                unsafe (base + done).copyMemory(from: source, byteCount: length)
            } else {
                unsafe try memory.read(into: UnsafeMutableRawBufferPointer(start: base + done, count: length),
                                       from: GuestAddress(segment.address.rawValue + offset))
            }
        }
    }

    /// Reads a plain value (little-endian on HVKit's hosts).
    public mutating func read<T: BitwiseCopyable>(_ type: T.Type = T.self) throws(ChainAccessError) -> T {
        unsafe try withUnsafeTemporaryAllocation(
            byteCount: MemoryLayout<T>.size, alignment: MemoryLayout<T>.alignment
        ) { buffer throws(ChainAccessError) -> T in
            unsafe try read(into: buffer)
            return unsafe buffer.load(as: T.self)
        }
    }

    /// Reads `count` bytes into a new array.
    public mutating func readBytes(_ count: Int) throws(ChainAccessError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var failure: ChainAccessError?
        unsafe bytes.withUnsafeMutableBytes { buffer in
            do throws(ChainAccessError) { unsafe try read(into: buffer) } catch { failure = error }
        }
        if let failure { throw failure }
        return bytes
    }

    /// Host buffers for the next `count` bytes, for zero-copy I/O from guest memory; the
    /// cursor moves past them.
    public mutating func hostBuffers(_ count: UInt64) throws(ChainAccessError) -> [UnsafeMutableRawBufferPointer] {
        unsafe try takeHostBuffers(count, from: &cursor, in: memory, for: .read, reusingTranslations: reusesTranslations)
    }

    /// Moves past `count` bytes.
    public mutating func skip(_ count: UInt64) throws(ChainAccessError) {
        try cursor.skip(count)
    }
}

/// Writes the device-writable part of a chain in order.
public struct ChainWriter {
    private let memory: any GuestMemory
    private var cursor: SegmentCursor
    /// Bytes written so far: what the device reports as the used length.
    public private(set) var bytesWritten: UInt64 = 0

    init(memory: any GuestMemory, segments: ArraySlice<ChainSegment>, total: UInt64) {
        self.memory = memory
        cursor = SegmentCursor(segments: segments, total: total)
    }

    /// Room left.
    public var remaining: UInt64 { cursor.remaining }

    /// Writes `bytes`.
    public mutating func write(_ bytes: UnsafeRawBufferPointer) throws(ChainAccessError) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        try cursor.transfer(UInt64(bytes.count), in: memory) { memory, segment, offset, length, done throws(GuestMemoryError) in
            // Through the memory, which checks the access and logs the write.
            unsafe try memory.write(UnsafeRawBufferPointer(start: base + done, count: length),
                                    to: GuestAddress(segment.address.rawValue + offset))
        }
        bytesWritten += UInt64(bytes.count)
    }

    /// Writes a plain value (little-endian on HVKit's hosts).
    public mutating func write<T: BitwiseCopyable>(_ value: T) throws(ChainAccessError) {
        var copy = value
        unsafe try withUnsafeBytes(of: &copy) { buffer throws(ChainAccessError) in unsafe try write(buffer) }
    }

    /// Writes the bytes of an array.
    public mutating func write(_ bytes: [UInt8]) throws(ChainAccessError) {
        var failure: ChainAccessError?
        unsafe bytes.withUnsafeBytes { buffer in
            do throws(ChainAccessError) { unsafe try write(buffer) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Moves past `count` bytes without writing them; they do not count as written.
    public mutating func skip(_ count: UInt64) throws(ChainAccessError) {
        try cursor.skip(count)
    }

    /// Host buffers for the next `count` bytes, for zero-copy I/O into guest memory; they count
    /// as written.
    public mutating func hostBuffers(_ count: UInt64) throws(ChainAccessError) -> [UnsafeMutableRawBufferPointer] {
        let buffers = unsafe try takeHostBuffers(count, from: &cursor, in: memory, for: .write, reusingTranslations: false)
        bytesWritten += count
        return unsafe buffers
    }
}

/// The host buffers for the next `count` bytes of `cursor`'s segments, which it moves past.
/// With `reusingTranslations`, a segment's kept host address stands for its lookup.
private func takeHostBuffers(
    _ count: UInt64, from cursor: inout SegmentCursor, in memory: any GuestMemory, for access: MemoryAccess,
    reusingTranslations: Bool
) throws(ChainAccessError) -> [UnsafeMutableRawBufferPointer] {
    var buffers: [UnsafeMutableRawBufferPointer] = unsafe []
    // At most one buffer per segment left (more only where a segment spans regions).
    unsafe buffers.reserveCapacity(cursor.segmentsLeft)
    try cursor.transfer(count, in: memory) { memory, segment, offset, length, _ throws(GuestMemoryError) in
        // SAFETY: a kept host address is `memory`'s own translation of the segment (the caller
        // checked); every other buffer comes from GuestMemory.unsafeHostBuffer(s), which checks
        // that it lies in RAM that allows `access`.
        if reusingTranslations, let base = unsafe segment.hostAddress?.pointer(advancedBy: offset) {
            unsafe buffers.append(UnsafeMutableRawBufferPointer(start: base, count: length))
            return
        }
        let address = GuestAddress(segment.address.rawValue + offset)
        // One region nearly always holds a segment; the general call splits one that spans
        // regions, and reports why a range is refused.
        if let buffer = unsafe try? memory.unsafeHostBuffer(at: address, length: UInt64(length), for: access) {
            unsafe buffers.append(buffer)
        } else {
            unsafe buffers += try memory.unsafeHostBuffers(at: address, length: UInt64(length), for: access)
        }
    }
    return unsafe buffers
}

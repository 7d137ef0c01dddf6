import HVCore

/// A packet the driver queued on a vsock device's transmit queue: its header, copied out of
/// the chain once, and the host buffers of its data in guest memory (zero-copy, checked).
///
/// The header's `len` is what counts: the chain must hold at least that much data after the
/// header, and may hold more (ignored), as Linux's and Firecracker's devices take it. A chain
/// that cannot be a packet is refused with the reason, and the device completes it without
/// acting on it.
///
/// SAFETY: ``data`` points into guest RAM the device's queue keeps mapped; it is valid until
/// the chain is completed, and only the device's thread that took the chain uses it.
@safe public struct VsockTransmitPacket: @unchecked Sendable {
    /// The header, as the guest wrote it (not yet checked against any connection).
    public let header: VsockHeader
    /// The data: `header.length` bytes of guest RAM, in the chain's order.
    public let data: [UnsafeMutableRawBufferPointer]

    /// The largest data a packet may carry: the default receive buffer of Linux's transport
    /// and Firecracker's limit.
    public static let maximumDataLength: UInt32 = 64 << 10

    /// The packet in `chain`, whose readable part holds the header and then the data.
    public init(_ chain: DescriptorChain, in memory: any GuestMemory) throws(VsockPacketError) {
        guard chain.writableLength == 0 else { throw .malformed("a transmit chain with device-writable descriptors") }
        guard chain.readableLength >= UInt64(VsockHeader.size) else {
            throw .malformed("\(chain.readableLength) bytes is less than a packet header")
        }
        var reader = chain.reader(in: memory)
        // The header copied to the stack and decoded there: no array per packet.
        let decoded = unsafe withUnsafeTemporaryAllocation(byteCount: VsockHeader.size, alignment: 8) {
            copy -> Result<VsockHeader?, ChainAccessError> in
            Result { () throws(ChainAccessError) in
                unsafe try reader.read(into: copy)
                return unsafe VsockHeader(loading: UnsafeRawBufferPointer(copy))
            }
        }
        let header: VsockHeader
        switch decoded {
        case let .success(value?): header = value
        case .success(nil): throw .malformed("no header")
        case let .failure(error): throw .memory("\(error)")
        }
        guard header.length <= Self.maximumDataLength else {
            throw .malformed("\(header.length) bytes of data is more than the \(Self.maximumDataLength) a packet may carry")
        }
        guard UInt64(header.length) <= chain.readableLength - UInt64(VsockHeader.size) else {
            throw .malformed("the header announces \(header.length) bytes; the chain holds \(chain.readableLength - UInt64(VsockHeader.size))")
        }
        do {
            unsafe data = try reader.hostBuffers(UInt64(header.length))
        } catch {
            throw .memory("\(error)")
        }
        self.header = header
    }

    /// A copy of the data (for tests and small control paths; the data path uses ``data``).
    public var dataBytes: [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(header.length))
        for unsafe buffer in unsafe data { unsafe bytes.append(contentsOf: UnsafeRawBufferPointer(buffer)) }
        return bytes
    }
}

/// Writing packets into the chains the driver posted on a vsock device's receive queue.
public enum VsockReceivePacket {
    /// Writes `header` and then the data `fill` puts into the buffers it is given (at most
    /// `header.length` bytes, which must fit after the header) into `chain`, whose writable
    /// part must hold at least the header. Returns the used length: the header and the data
    /// written.
    ///
    /// `fill` gets the host buffers of the data's place in guest memory, so host data can be
    /// read straight into them (a `readv` from a socket); it returns the bytes it wrote, which
    /// become the header's `len`.
    public static func write(
        _ header: VsockHeader, into chain: DescriptorChain, in memory: any GuestMemory,
        fill: ([UnsafeMutableRawBufferPointer]) -> UInt32 = { _ in 0 }
    ) throws(VsockPacketError) -> UInt32 {
        try checkShape(chain)
        guard UInt64(header.length) <= chain.writableLength - UInt64(VsockHeader.size) else {
            throw .malformed("\(header.length) bytes of data do not fit in a receive chain of \(chain.writableLength) bytes")
        }
        let written = unsafe try write(into: chain, in: memory, dataLimit: header.length, fill: fill) { length in
            var written = header
            written.length = length
            return written
        }
        return written ?? UInt32(VsockHeader.size)
    }

    /// Reads data into `chain` with `fill` (at most `dataLimit` bytes, and no more than the
    /// chain holds after the header), then writes the header `header` makes for the bytes
    /// filled; its `len` is set to that count. Returns the used length, or nil when `header`
    /// declined (nothing came to send): the chain is then untouched as far as the driver can
    /// tell and may be used for the next packet.
    public static func write(
        into chain: DescriptorChain, in memory: any GuestMemory, dataLimit: UInt32,
        fill: ([UnsafeMutableRawBufferPointer]) -> UInt32, header: (UInt32) -> VsockHeader?
    ) throws(VsockPacketError) -> UInt32? {
        try checkShape(chain)
        let limit = UInt32(min(UInt64(dataLimit), chain.writableLength - UInt64(VsockHeader.size)))
        // The data first, so that the header can say how much of it came.
        var data = chain.writer(in: memory)
        let buffers: [UnsafeMutableRawBufferPointer]
        do {
            try data.skip(UInt64(VsockHeader.size))
            unsafe buffers = try data.hostBuffers(UInt64(limit))
        } catch {
            throw .memory("\(error)")
        }
        let count = min(unsafe fill(buffers), limit)
        guard var written = header(count) else { return nil }
        written.length = count
        try writeHeader(written, into: chain, in: memory)
        return UInt32(VsockHeader.size) + count
    }

    /// Reads data for several packets at once: `fill` gets the data places of `chains` in
    /// order (each chain's room after its header, at most ``VsockTransmitPacket/maximumDataLength``,
    /// and `dataLimit` in all), so that one `readv` fills them; the bytes it reports are then
    /// shared out in order, each chain that got some gets the header `header` makes for its
    /// share. Returns the chains used and their used lengths, in order; the chains after them
    /// were not touched as far as the driver can tell.
    public static func write(
        into chains: some Collection<DescriptorChain>, in memory: any GuestMemory, dataLimit: UInt32,
        fill: ([UnsafeMutableRawBufferPointer]) -> UInt32, header: (UInt32) -> VsockHeader?
    ) throws(VsockPacketError) -> [(head: UInt16, length: UInt32)] {
        var places: [(chain: DescriptorChain, room: UInt32)] = []
        var buffers: [UnsafeMutableRawBufferPointer] = unsafe []
        var left = dataLimit
        for chain in chains where left > 0 {
            try checkShape(chain)
            let room = UInt32(min(UInt64(min(left, VsockTransmitPacket.maximumDataLength)), chain.writableLength - UInt64(VsockHeader.size)))
            guard room > 0 else { continue }
            var writer = chain.writer(in: memory)
            do {
                try writer.skip(UInt64(VsockHeader.size))
                unsafe buffers += try writer.hostBuffers(UInt64(room))
            } catch {
                throw .memory("\(error)")
            }
            places.append((chain, room))
            left -= room
        }
        var filled = min(unsafe fill(buffers), dataLimit - left)
        var used: [(head: UInt16, length: UInt32)] = []
        used.reserveCapacity(places.count)
        for place in places where filled > 0 {
            let share = min(filled, place.room)
            guard var written = header(share) else { break }
            written.length = share
            try writeHeader(written, into: place.chain, in: memory)
            used.append((place.chain.head, UInt32(VsockHeader.size) + share))
            filled -= share
        }
        return used
    }

    /// Writes `header` at the start of `chain`: straight into its first buffer when the header
    /// fits there (Linux gives a header and its data one buffer), through a writer otherwise.
    private static func writeHeader(_ header: VsockHeader, into chain: DescriptorChain, in memory: any GuestMemory) throws(VsockPacketError) {
        do {
            if let first = chain.segments.first, first.length >= UInt32(VsockHeader.size) {
                try unsafe header.withBytes { bytes throws(GuestMemoryError) in unsafe try memory.write(bytes, to: first.address) }
            } else {
                var writer = chain.writer(in: memory)
                try unsafe header.withBytes { bytes throws(ChainAccessError) in unsafe try writer.write(bytes) }
            }
        } catch {
            throw .memory("\(error)")
        }
    }

    private static func checkShape(_ chain: DescriptorChain) throws(VsockPacketError) {
        guard chain.readableLength == 0 else { throw .malformed("a receive chain with device-readable descriptors") }
        guard chain.writableLength >= UInt64(VsockHeader.size) else {
            throw .malformed("a receive chain of \(chain.writableLength) bytes has no room for a packet header")
        }
    }
}

/// Why a chain cannot carry a vsock packet.
public enum VsockPacketError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The chain's shape or the header's length is wrong.
    case malformed(String)
    /// The chain's buffers could not be reached in guest memory.
    case memory(String)

    /// What was wrong.
    public var description: String {
        switch self {
        case let .malformed(reason): reason
        case let .memory(reason): "guest memory: \(reason)"
        }
    }
}

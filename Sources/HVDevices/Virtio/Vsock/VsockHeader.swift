/// The header in front of every virtio-vsock packet (`struct virtio_vsock_hdr`, 44 bytes,
/// little-endian, virtio 1.2 section 5.10.6): who sends to whom, what the packet does, and
/// the sender's credit (its receive buffer and how much of it has been consumed).
public struct VsockHeader: Hashable, Sendable {
    /// The header's size on the wire.
    public static let size = 44

    /// What a packet asks for (`op`).
    public enum Operation: UInt16, Sendable, CaseIterable {
        /// VIRTIO_VSOCK_OP_INVALID.
        case invalid = 0
        /// VIRTIO_VSOCK_OP_REQUEST: open a connection.
        case request = 1
        /// VIRTIO_VSOCK_OP_RESPONSE: accept one.
        case response = 2
        /// VIRTIO_VSOCK_OP_RST: refuse or end one at once.
        case reset = 3
        /// VIRTIO_VSOCK_OP_SHUTDOWN: stop receiving or sending (``ShutdownFlags``).
        case shutdown = 4
        /// VIRTIO_VSOCK_OP_RW: data (`length` bytes follow the header).
        case readWrite = 5
        /// VIRTIO_VSOCK_OP_CREDIT_UPDATE: the sender's credit changed.
        case creditUpdate = 6
        /// VIRTIO_VSOCK_OP_CREDIT_REQUEST: send your credit.
        case creditRequest = 7
    }

    /// VIRTIO_VSOCK_TYPE_STREAM, the socket type HVKit's device serves.
    public static let streamType: UInt16 = 1

    /// The flags of a ``Operation/shutdown`` packet.
    public struct ShutdownFlags: OptionSet, Hashable, Sendable {
        /// The raw flags.
        public let rawValue: UInt32
        /// Flags from their raw value.
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// VIRTIO_VSOCK_SHUTDOWN_RCV: the sender receives no more.
        public static let receive = ShutdownFlags(rawValue: 1)
        /// VIRTIO_VSOCK_SHUTDOWN_SEND: the sender sends no more.
        public static let send = ShutdownFlags(rawValue: 2)
    }

    /// src_cid.
    public var sourceCID: UInt64 = 0
    /// dst_cid.
    public var destinationCID: UInt64 = 0
    /// src_port.
    public var sourcePort: UInt32 = 0
    /// dst_port.
    public var destinationPort: UInt32 = 0
    /// len: the data bytes after the header (``Operation/readWrite`` only).
    public var length: UInt32 = 0
    /// type (``streamType``).
    public var type: UInt16 = 0
    /// op: the raw operation (see ``operation``).
    public var operationCode: UInt16 = 0
    /// flags (``ShutdownFlags`` for a shutdown).
    public var flags: UInt32 = 0
    /// buf_alloc: the sender's receive buffer for this connection.
    public var bufferAllocation: UInt32 = 0
    /// fwd_cnt: the bytes the sender has consumed from that buffer, since the connection began
    /// (wrapping).
    public var forwardCount: UInt32 = 0

    /// A header with every field zero.
    public init() {}

    /// A stream packet from `source` to `destination` (CID and port each) doing `operation`.
    public init(from source: (cid: UInt64, port: UInt32), to destination: (cid: UInt64, port: UInt32),
                operation: Operation, length: UInt32 = 0, flags: UInt32 = 0,
                bufferAllocation: UInt32 = 0, forwardCount: UInt32 = 0) {
        sourceCID = source.cid
        sourcePort = source.port
        destinationCID = destination.cid
        destinationPort = destination.port
        self.length = length
        type = Self.streamType
        operationCode = operation.rawValue
        self.flags = flags
        self.bufferAllocation = bufferAllocation
        self.forwardCount = forwardCount
    }

    /// The header in the first 44 of `bytes`; nil when there are fewer.
    public init?(bytes: some Collection<UInt8>) {
        let field = Array(bytes.prefix(Self.size))
        guard field.count == Self.size else { return nil }
        func value<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
            var result: T = 0
            for index in 0..<MemoryLayout<T>.size { result |= T(field[offset + index]) << (8 * index) }
            return result
        }
        sourceCID = value(UInt64.self, at: 0)
        destinationCID = value(UInt64.self, at: 8)
        sourcePort = value(UInt32.self, at: 16)
        destinationPort = value(UInt32.self, at: 20)
        length = value(UInt32.self, at: 24)
        type = value(UInt16.self, at: 28)
        operationCode = value(UInt16.self, at: 30)
        flags = value(UInt32.self, at: 32)
        bufferAllocation = value(UInt32.self, at: 36)
        forwardCount = value(UInt32.self, at: 40)
    }

    /// The 44 bytes, little-endian.
    public var bytes: [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(Self.size)
        func append<T: FixedWidthInteger>(_ value: T) {
            for index in 0..<MemoryLayout<T>.size { result.append(UInt8(truncatingIfNeeded: value >> (8 * index))) }
        }
        append(sourceCID)
        append(destinationCID)
        append(sourcePort)
        append(destinationPort)
        append(length)
        append(type)
        append(operationCode)
        append(flags)
        append(bufferAllocation)
        append(forwardCount)
        return result
    }

    /// The operation; nil for a code the specification does not define.
    public var operation: Operation? { Operation(rawValue: operationCode) }

    /// The shutdown flags (meaningful for a ``Operation/shutdown`` packet).
    public var shutdownFlags: ShutdownFlags { ShutdownFlags(rawValue: flags) }
}

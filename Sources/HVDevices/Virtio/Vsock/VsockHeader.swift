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
        let decoded = bytes.withContiguousStorageIfAvailable { unsafe Self(loading: UnsafeRawBufferPointer($0)) }
        guard let header = unsafe decoded ?? Array(bytes.prefix(Self.size)).withUnsafeBytes({ unsafe Self(loading: $0) }) else { return nil }
        self = header
    }

    /// The header in the first 44 bytes of `raw`; nil when there are fewer. Decodes the fields
    /// with one unaligned little-endian load each (a generic byte loop cost a fifth of the data
    /// path's CPU).
    public init?(loading raw: UnsafeRawBufferPointer) {
        guard raw.count >= Self.size else { return nil }
        func load<T: FixedWidthInteger>(_: T.Type, _ offset: Int) -> T {
            // SAFETY: offset + size(T) <= 44 <= raw.count, checked above.
            T(littleEndian: unsafe raw.loadUnaligned(fromByteOffset: offset, as: T.self))
        }
        sourceCID = load(UInt64.self, 0)
        destinationCID = load(UInt64.self, 8)
        sourcePort = load(UInt32.self, 16)
        destinationPort = load(UInt32.self, 20)
        length = load(UInt32.self, 24)
        type = load(UInt16.self, 28)
        operationCode = load(UInt16.self, 30)
        flags = load(UInt32.self, 32)
        bufferAllocation = load(UInt32.self, 36)
        forwardCount = load(UInt32.self, 40)
    }

    /// The 44 bytes, little-endian.
    public var bytes: [UInt8] {
        unsafe [UInt8](unsafeUninitializedCapacity: Self.size) { buffer, initialized in
            unsafe store(into: UnsafeMutableRawBufferPointer(buffer))
            initialized = Self.size
        }
    }

    /// Calls `body` with the 44 bytes, little-endian, on the stack (no array).
    func withBytes<Result, Failure: Error>(
        _ body: (UnsafeRawBufferPointer) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        try unsafe withUnsafeTemporaryAllocation(byteCount: Self.size, alignment: 8) { buffer throws(Failure) -> Result in
            unsafe store(into: buffer)
            return try unsafe body(UnsafeRawBufferPointer(buffer))
        }
    }

    /// Stores the 44 bytes at the start of `raw`, which holds at least that many.
    private func store(into raw: UnsafeMutableRawBufferPointer) {
        func store<T: FixedWidthInteger>(_ value: T, _ offset: Int) {
            // SAFETY: offset + size(T) <= 44 <= raw.count.
            unsafe raw.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
        }
        store(sourceCID, 0)
        store(destinationCID, 8)
        store(sourcePort, 16)
        store(destinationPort, 20)
        store(length, 24)
        store(type, 28)
        store(operationCode, 30)
        store(flags, 32)
        store(bufferAllocation, 36)
        store(forwardCount, 40)
    }

    /// The operation; nil for a code the specification does not define.
    public var operation: Operation? { Operation(rawValue: operationCode) }

    /// The shutdown flags (meaningful for a ``Operation/shutdown`` packet).
    public var shutdownFlags: ShutdownFlags { ShutdownFlags(rawValue: flags) }
}

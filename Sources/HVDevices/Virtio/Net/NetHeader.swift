/// struct virtio_net_hdr_v1 (virtio 1.2, 5.1.6): the 12 bytes in front of every frame on both
/// queues, little-endian. Read from a guest's transmit chain once, into this copy, and checked
/// with ``validatedForTransmit(frameLength:negotiated:)`` before anything acts on it.
public struct NetHeader: Hashable, Sendable {
    /// The header's size with VERSION_1 (num_buffers always present).
    public static let size = 12

    /// VIRTIO_NET_HDR_F_NEEDS_CSUM: the checksum from `checksumStart` is partial.
    public static let needsChecksum: UInt8 = 1
    /// VIRTIO_NET_HDR_F_DATA_VALID: the checksum was verified (receive only).
    public static let dataValid: UInt8 = 2

    /// The segmentation offload a frame carries (gso_type).
    public enum Segmentation: UInt8, Sendable {
        /// VIRTIO_NET_HDR_GSO_NONE.
        case none = 0
        /// VIRTIO_NET_HDR_GSO_TCPV4.
        case tcpIPv4 = 1
        /// VIRTIO_NET_HDR_GSO_UDP.
        case udp = 3
        /// VIRTIO_NET_HDR_GSO_TCPV6.
        case tcpIPv6 = 4
    }

    /// VIRTIO_NET_HDR_GSO_ECN, or-ed into gso_type.
    public static let segmentationECN: UInt8 = 0x80

    /// flags.
    public var flags: UInt8 = 0
    /// gso_type (a ``Segmentation`` with ``segmentationECN`` possibly or-ed in).
    public var segmentationType: UInt8 = 0
    /// hdr_len: the length of the headers to repeat in each segment.
    public var headerLength: UInt16 = 0
    /// gso_size: the payload of each segment.
    public var segmentSize: UInt16 = 0
    /// csum_start: where the checksummed range starts.
    public var checksumStart: UInt16 = 0
    /// csum_offset: where, from `checksumStart`, the checksum goes.
    public var checksumOffset: UInt16 = 0
    /// num_buffers: the receive chains a frame spans (MRG_RXBUF), 1 otherwise.
    public var bufferCount: UInt16 = 0

    /// A header with every field zero: a plain frame.
    public init() {}

    /// The header in the first 12 of `bytes` (little-endian); nil when there are fewer.
    public init?(bytes: some Collection<UInt8>) {
        let field = Array(bytes.prefix(Self.size))
        guard let header = unsafe field.withUnsafeBytes({ unsafe NetHeader(loading: $0) }) else { return nil }
        self = header
    }

    /// The header in the first 12 bytes of `raw` (little-endian); nil when there are fewer.
    /// For the data path: no array in between.
    public init?(loading raw: UnsafeRawBufferPointer) {
        guard raw.count >= Self.size else { return nil }
        func word(_ offset: Int) -> UInt16 { unsafe UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt16.self)) }
        flags = unsafe raw[0]
        segmentationType = unsafe raw[1]
        headerLength = word(2)
        segmentSize = word(4)
        checksumStart = word(6)
        checksumOffset = word(8)
        bufferCount = word(10)
    }

    /// Writes the 12 bytes (little-endian) at the start of `raw`, which must have room for them.
    public func store(into raw: UnsafeMutableRawBufferPointer) {
        guard raw.count >= Self.size else { return }
        unsafe raw[0] = flags
        unsafe raw[1] = segmentationType
        unsafe raw.storeBytes(of: headerLength.littleEndian, toByteOffset: 2, as: UInt16.self)
        unsafe raw.storeBytes(of: segmentSize.littleEndian, toByteOffset: 4, as: UInt16.self)
        unsafe raw.storeBytes(of: checksumStart.littleEndian, toByteOffset: 6, as: UInt16.self)
        unsafe raw.storeBytes(of: checksumOffset.littleEndian, toByteOffset: 8, as: UInt16.self)
        unsafe raw.storeBytes(of: bufferCount.littleEndian, toByteOffset: 10, as: UInt16.self)
    }

    /// The 12 bytes, little-endian.
    public var bytes: [UInt8] {
        unsafe [UInt8](unsafeUninitializedCapacity: Self.size) { buffer, count in
            unsafe store(into: UnsafeMutableRawBufferPointer(buffer))
            count = Self.size
        }
    }

    /// The segmentation, without the ECN bit; nil for a type the specification does not have.
    public var segmentation: Segmentation? { Segmentation(rawValue: segmentationType & ~Self.segmentationECN) }

    /// Why a transmitted frame's header is refused.
    public enum TransmitError: Error, Hashable, Sendable, CustomStringConvertible {
        /// An unknown gso_type.
        case unknownSegmentation(UInt8)
        /// An offload the driver did not negotiate (the feature's name).
        case notNegotiated(String)
        /// The partial checksum's place is outside the frame.
        case checksumOutsideFrame(start: UInt16, offset: UInt16, frameLength: Int)
        /// A segmentation frame without a segment size, or flags the device does not know.
        case malformed(String)

        /// What the driver got wrong.
        public var description: String {
            switch self {
            case let .unknownSegmentation(type): "gso_type \(type) is not one the specification defines"
            case let .notNegotiated(feature): "the frame asks for \(feature), which the driver did not negotiate"
            case let .checksumOutsideFrame(start, offset, length): "checksum at \(start)+\(offset) lies outside the \(length)-byte frame"
            case let .malformed(reason): reason
            }
        }
    }

    /// Checks a header the guest wrote in front of a `frameLength`-byte frame on the transmit
    /// queue against what the driver negotiated, as a device must (virtio 1.2, 5.1.6.2.1): an
    /// offload needs its HOST_ feature, NEEDS_CSUM needs CSUM and a checksum place inside the
    /// frame (2 bytes at csum_start + csum_offset), segmentation needs a segment size. The
    /// header is what the backend (a tap with IFF_VNET_HDR) acts on, so nothing unchecked
    /// reaches the host kernel.
    public func validatedForTransmit(frameLength: Int, negotiated features: VirtioFeatures) throws(TransmitError) -> NetHeader {
        guard flags & ~(Self.needsChecksum | Self.dataValid) == 0 else {
            throw .malformed("flags 0x\(String(flags, radix: 16)) has bits the device does not know")
        }
        guard let segmentation else { throw .unknownSegmentation(segmentationType) }
        if flags & Self.needsChecksum != 0 {
            guard features.contains(.netChecksum) else { throw .notNegotiated("VIRTIO_NET_F_CSUM") }
            guard Int(checksumStart) + Int(checksumOffset) + 2 <= frameLength else {
                throw .checksumOutsideFrame(start: checksumStart, offset: checksumOffset, frameLength: frameLength)
            }
        }
        switch segmentation {
        case .none:
            guard segmentationType & Self.segmentationECN == 0 else { throw .malformed("ECN set without segmentation") }
        case .tcpIPv4, .tcpIPv6, .udp:
            let needed: (VirtioFeatures, String) = switch segmentation {
            case .tcpIPv4: (.netHostTSO4, "VIRTIO_NET_F_HOST_TSO4")
            case .tcpIPv6: (.netHostTSO6, "VIRTIO_NET_F_HOST_TSO6")
            default: (.netHostUFO, "VIRTIO_NET_F_HOST_UFO")
            }
            guard features.contains(needed.0) else { throw .notNegotiated(needed.1) }
            guard segmentationType & Self.segmentationECN == 0 || features.contains(.netHostECN) else {
                throw .notNegotiated("VIRTIO_NET_F_HOST_ECN")
            }
            guard segmentSize > 0 else { throw .malformed("segmentation without a segment size") }
            guard flags & Self.needsChecksum != 0 else { throw .malformed("segmentation without a partial checksum") }
        }
        var checked = self
        // num_buffers means nothing on transmit: the device does not pass it on.
        checked.bufferCount = 0
        return checked
    }
}

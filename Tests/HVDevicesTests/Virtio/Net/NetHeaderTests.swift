import HVDevices
import HVDevicesTesting
import Testing

@Suite("virtio-net header")
struct NetHeaderTests {
    /// A TCP/IPv4 segmentation frame's header, as Linux writes one.
    static var tso: NetHeader {
        EthernetFrames.tcp(from: [], to: [], sourceAddress: [], destinationAddress: [], payloadLength: 0, segmented: true).header
    }

    @Test func roundTripsItsTwelveBytes() {
        var header = Self.tso
        header.bufferCount = 3
        #expect(header.bytes == [1, 1, 54, 0, 0xA8, 5, 34, 0, 16, 0, 3, 0])
        #expect(NetHeader(bytes: header.bytes) == header)
        #expect(NetHeader(bytes: [UInt8](repeating: 0, count: 11)) == nil)
    }

    static let everything: VirtioFeatures = [.netChecksum, .netHostTSO4, .netHostTSO6, .netHostECN, .netHostUFO]

    /// Frames a hostile driver might send, each refused for its reason; a plain frame and a
    /// well-formed TSO frame pass (num_buffers dropped).
    @Test func transmitHeadersAreCheckedAgainstTheNegotiatedFeatures() throws {
        var plain = NetHeader()
        plain.bufferCount = 9
        #expect(try plain.validatedForTransmit(frameLength: 60, negotiated: []).bufferCount == 0)

        let tso = Self.tso
        #expect(throws: Never.self) { try tso.validatedForTransmit(frameLength: 65_000, negotiated: Self.everything) }
        #expect(throws: NetHeader.TransmitError.notNegotiated("VIRTIO_NET_F_HOST_TSO4")) {
            try tso.validatedForTransmit(frameLength: 65_000, negotiated: [.netChecksum])
        }
        #expect(throws: NetHeader.TransmitError.notNegotiated("VIRTIO_NET_F_CSUM")) {
            try tso.validatedForTransmit(frameLength: 65_000, negotiated: [.netHostTSO4])
        }
        // The checksum's two bytes must lie inside the frame.
        #expect(throws: NetHeader.TransmitError.checksumOutsideFrame(start: 34, offset: 16, frameLength: 51)) {
            try tso.validatedForTransmit(frameLength: 51, negotiated: Self.everything)
        }
        var ecn = tso
        ecn.segmentationType |= NetHeader.segmentationECN
        #expect(throws: NetHeader.TransmitError.notNegotiated("VIRTIO_NET_F_HOST_ECN")) {
            try ecn.validatedForTransmit(frameLength: 65_000, negotiated: [.netChecksum, .netHostTSO4])
        }
        var noSize = tso
        noSize.segmentSize = 0
        #expect(throws: NetHeader.TransmitError.self) { try noSize.validatedForTransmit(frameLength: 65_000, negotiated: Self.everything) }
        var noChecksum = tso
        noChecksum.flags = 0
        #expect(throws: NetHeader.TransmitError.self) { try noChecksum.validatedForTransmit(frameLength: 65_000, negotiated: Self.everything) }
        var unknown = NetHeader()
        unknown.segmentationType = 2
        #expect(throws: NetHeader.TransmitError.unknownSegmentation(2)) { try unknown.validatedForTransmit(frameLength: 60, negotiated: Self.everything) }
        var strayECN = NetHeader()
        strayECN.segmentationType = NetHeader.segmentationECN
        #expect(throws: NetHeader.TransmitError.self) { try strayECN.validatedForTransmit(frameLength: 60, negotiated: Self.everything) }
        var badFlags = NetHeader()
        badFlags.flags = 0x84
        #expect(throws: NetHeader.TransmitError.self) { try badFlags.validatedForTransmit(frameLength: 60, negotiated: Self.everything) }
    }

    /// The offload table: what the tap may pass to the guest follows the guest features the
    /// driver accepted, and nothing that depends on checksum offload without it.
    @Test(arguments: [
        ([], []),
        ([.netGuestTSO4, .netGuestTSO6, .netGuestUFO], []),
        ([.netGuestChecksum], [.checksum]),
        ([.netGuestChecksum, .netGuestTSO4], [.checksum, .tso4]),
        ([.netGuestChecksum, .netGuestTSO4, .netGuestTSO6, .netGuestECN, .netGuestUFO], [.checksum, .tso4, .tso6, .tsoECN, .ufo]),
        ([.netGuestChecksum, .netGuestECN], [.checksum]),
        // Host-side features say nothing about what the guest takes.
        ([.netChecksum, .netHostTSO4, .netHostTSO6], []),
    ] as [(VirtioFeatures, TapOffloads)])
    func tapOffloadsFollowTheGuestFeatures(features: VirtioFeatures, expected: TapOffloads) {
        #expect(TapOffloads(negotiated: features) == expected)
    }

    @Test func configurationLaysOutMacStatusAndMTU() {
        let configuration = NetConfiguration(mac: [0x02, 0x48, 0x56, 0x4B, 0, 1], mtu: 9000)
        let bytes = configuration.bytes
        #expect(bytes.count == NetConfiguration.size)
        #expect(Array(bytes[0..<6]) == [0x02, 0x48, 0x56, 0x4B, 0, 1])
        #expect(bytes[6] == 1 && bytes[7] == 0)  // link up
        #expect(bytes[8] == 1 && bytes[9] == 0)  // one queue pair
        #expect(bytes[10] == 0x28 && bytes[11] == 0x23)  // 9000
        #expect(NetConfiguration(mac: [1, 2], linkIsUp: false).bytes[0..<8] == [1, 2, 0, 0, 0, 0, 0, 0])
    }
}

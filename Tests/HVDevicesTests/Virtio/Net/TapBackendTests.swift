import Glibc
import HVCore
@testable import HVDevices
import HVDevicesTesting
import HVTestSupport
import SystemPackage
import Testing

/// A configured tap (the host at 10.199.N.1, the driver's MAC as 10.199.N.2's neighbour)
/// with a virtio-net device on it.
final class TapRig {
    let tap: ConfiguredTap
    let rig: NetRig
    var hostAddress: [UInt8] { tap.hostAddress }
    var guestAddress: [UInt8] { tap.guestAddress }
    var hostMAC: [UInt8] { tap.hostMAC }
    var tapReceivedBytes: UInt64 { get throws { try tap.hostReceivedBytes } }

    init(features: VirtioFeatures? = nil) throws {
        tap = try ConfiguredTap(guestMAC: guestMAC)
        rig = try NetRig(features: features, backend: tap.backend)
    }

    /// A UDP socket bound to the host's address on `port`, with a receive timeout.
    func hostSocket(port: UInt16) throws -> Int32 {
        let socketFD = try tap.socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var address = sockaddr_in(port: port, address: hostAddress)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socketFD, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        try #require(bound == 0, "bind: \(errno)")
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(socketFD, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return socketFD
    }
}

extension sockaddr_in {
    init(port: UInt16, address: [UInt8]) {
        self.init()
        sin_family = sa_family_t(AF_INET)
        sin_port = port.bigEndian
        sin_addr.s_addr = address.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
    }
}

@Suite("virtio-net over a tap", .enabled(if: ConfiguredTap.unavailableReason == nil, Comment(rawValue: ConfiguredTap.unavailableReason ?? "")),
       .serialized)
struct TapBackendTests {
    @Test func opensATapWithTheVirtioNetHeader() throws {
        let tap = try TapBackend()
        #expect(tap.interfaceName.hasPrefix("tap"))
        #expect(tap.supportedOffloads.isSuperset(of: [.checksum, .tso4, .tso6]))
        try tap.enableOffloads([.checksum, .tso4])
        try tap.enableOffloads([])
        // A tap the process already holds cannot be attached twice.
        #expect(throws: NetBackendError.self) { try TapBackend(name: tap.interfaceName) }
        #expect(try NetRig(backend: tap).mmio.offeredFeatures.isSuperset(of: [.netChecksum, .netGuestChecksum, .netHostTSO4, .netGuestTSO6]))
    }

    /// UDP datagrams whose frames are 60 to 1514 bytes go from the driver through the tap to a
    /// host socket, and the host's answers come back through the tap into the driver's
    /// buffers, byte-identical.
    @Test func udpFramesCrossTheTapBothWaysByteIdentical() throws {
        let tap = try TapRig()
        let rig = tap.rig
        let host = try tap.hostSocket(port: 5000)
        defer { close(host) }
        // With GUEST_TSO the device reads once a 64 KiB frame's worth of buffers is posted.
        try rig.postReceiveBuffers(50)
        let payloadSizes = [60, 61, 100, 512, 1000, 1499, 1514].map { $0 - 42 }
        var seen = 0
        var posted = 0
        for (index, size) in payloadSizes.enumerated() {
            let payload = (0..<max(size, 0)).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ index) }
            let frame = EthernetFrames.udp(from: guestMAC, to: tap.hostMAC, sourceAddress: tap.guestAddress, destinationAddress: tap.hostAddress,
                                           sourcePort: 4000, destinationPort: 5000, payload: payload)
            #expect(frame.count == max(size, 0) + 42)
            try rig.transmit(frame)
            var buffer = [UInt8](repeating: 0, count: 2048)
            var from = sockaddr_in()
            var fromLength = socklen_t(MemoryLayout<sockaddr_in>.size)
            let count = withUnsafeMutablePointer(to: &from) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(host, &buffer, buffer.count, 0, $0, &fromLength) }
            }
            try #require(count >= 0, "the host did not receive datagram \(index): errno \(errno)")
            #expect(Array(buffer.prefix(count)) == payload)
            // Echo it back to where it came from.
            #expect(sendto(host, buffer, count, 0, withUnsafePointer(to: &from) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { $0 } },
                           fromLength) == count)
            // The host also sends its own frames (IPv6 neighbour discovery, MLD): look for the echo.
            var answer: [UInt8]?
            _ = try waitUntil {
                let used = try rig.waitForReceived(seen + 1)
                while seen < used.count, answer == nil {
                    let bytes = try rig.contents(ofReceiveChain: used[seen].id, length: used[seen].length)
                    seen += 1
                    if let datagram = EthernetFrames.udpDatagram(in: Array(bytes.dropFirst(NetHeader.size))),
                       datagram.destinationPort == 4000 {
                        answer = datagram.payload
                    }
                }
                return answer != nil
            }
            #expect(answer == payload, "datagram \(index) did not come back intact")
            try rig.postReceiveBuffers(seen - posted)
            posted = seen
        }
        #expect(rig.device.counts.droppedTransmitFrames == 0 && rig.device.counts.droppedReceiveFrames == 0)
    }

    /// With HOST_TSO4 and CSUM negotiated, a 64 KiB TCP segmentation frame from the driver is
    /// taken whole by the tap, which segments it (the host counts every byte).
    @Test func aSixtyFourKiBSegmentationFrameIsTakenWhole() throws {
        let tap = try TapRig()
        let before = try tap.tapReceivedBytes
        let payload = 65_535 - 40
        let (header, frame) = EthernetFrames.tcp(from: guestMAC, to: tap.hostMAC, sourceAddress: tap.guestAddress,
                                                 destinationAddress: tap.hostAddress, payloadLength: payload, segmented: true)
        #expect(try tap.rig.transmit(frame, header: header, pieces: 17) == 0)
        #expect(tap.rig.device.counts.transmittedFrames == 1 && tap.rig.device.counts.droppedTransmitFrames == 0)
        // The host's side counts what the tap took, segmented into 1448-byte pieces.
        _ = try waitUntil { try tap.tapReceivedBytes - before >= UInt64(payload) }
        #expect(try tap.tapReceivedBytes - before >= UInt64(payload))
    }
}

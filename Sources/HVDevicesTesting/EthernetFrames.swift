import HVDevices

/// Ethernet frames carrying IPv4 and UDP, built and taken apart the way a guest's stack would,
/// for tests and benchmarks of network devices without a guest.
public enum EthernetFrames {
    /// EtherType IPv4.
    public static let ipv4Type: UInt16 = 0x0800

    /// An Ethernet frame from `source` to `destination` (MAC addresses) carrying an IPv4 UDP
    /// datagram with `payload`. The UDP checksum is 0 (none, allowed over IPv4); the IPv4 header
    /// checksum is computed.
    public static func udp(
        from source: [UInt8], to destination: [UInt8],
        sourceAddress: [UInt8], destinationAddress: [UInt8],
        sourcePort: UInt16, destinationPort: UInt16, payload: [UInt8]
    ) -> [UInt8] {
        let udpLength = 8 + payload.count
        let ipLength = 20 + udpLength
        var ip: [UInt8] = [0x45, 0, UInt8(ipLength >> 8), UInt8(ipLength & 0xFF), 0, 0, 0x40, 0, 64, 17, 0, 0]
        ip += sourceAddress.prefix(4) + destinationAddress.prefix(4)
        let checksum = internetChecksum(ip)
        ip[10] = UInt8(checksum >> 8)
        ip[11] = UInt8(checksum & 0xFF)
        let udp: [UInt8] = [UInt8(sourcePort >> 8), UInt8(sourcePort & 0xFF), UInt8(destinationPort >> 8),
                            UInt8(destinationPort & 0xFF), UInt8(udpLength >> 8), UInt8(udpLength & 0xFF), 0, 0]
        var frame = Array(destination.prefix(6))
        frame += source.prefix(6)
        frame += [UInt8(ipv4Type >> 8), UInt8(ipv4Type & 0xFF)]
        frame += ip
        frame += udp
        frame += payload
        return frame
    }

    /// An Ethernet frame carrying one TCP/IPv4 segment (ports 4001 to 5001, ACK|PSH) with
    /// `payloadLength` bytes that count up, its TCP checksum left for the device to finish, and
    /// the virtio-net header a driver would put in front of it: TCP segmentation offload into
    /// 1448-byte segments when `segmented`, else a plain frame (whose checksum stays 0).
    public static func tcp(
        from source: [UInt8], to destination: [UInt8], sourceAddress: [UInt8], destinationAddress: [UInt8],
        payloadLength: Int, segmented: Bool
    ) -> (header: NetHeader, frame: [UInt8]) {
        let ipLength = 40 + payloadLength
        var ip: [UInt8] = [0x45, 0, UInt8(truncatingIfNeeded: ipLength >> 8), UInt8(truncatingIfNeeded: ipLength), 0, 0, 0x40, 0, 64, 6, 0, 0]
        ip += sourceAddress.prefix(4) + destinationAddress.prefix(4)
        let checksum = internetChecksum(ip)
        ip[10] = UInt8(checksum >> 8)
        ip[11] = UInt8(checksum & 0xFF)
        var frame = Array(destination.prefix(6))
        frame += source.prefix(6)
        frame += [UInt8(ipv4Type >> 8), UInt8(ipv4Type & 0xFF)]
        frame += ip
        frame += [0x0F, 0xA1, 0x13, 0x89, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xFF, 0xFF, 0, 0, 0, 0]
        frame += (0..<payloadLength).map { UInt8(truncatingIfNeeded: $0) }
        var header = NetHeader()
        if segmented {
            header.flags = NetHeader.needsChecksum
            header.segmentationType = NetHeader.Segmentation.tcpIPv4.rawValue
            header.headerLength = 54
            header.segmentSize = 1448
            header.checksumStart = 34
            header.checksumOffset = 16
        }
        return (header, frame)
    }

    /// The UDP datagram in an Ethernet frame (IPv4, no options checked beyond the header length):
    /// its ports and payload, or nil if the frame is something else.
    public static func udpDatagram(in frame: [UInt8]) -> (sourcePort: UInt16, destinationPort: UInt16, payload: [UInt8])? {
        guard frame.count >= 14 + 20 + 8, frame[12] == 0x08, frame[13] == 0x00, frame[14] >> 4 == 4, frame[23] == 17 else {
            return nil
        }
        let ipHeader = Int(frame[14] & 0x0F) * 4
        let udp = 14 + ipHeader
        guard frame.count >= udp + 8 else { return nil }
        func word(_ at: Int) -> UInt16 { UInt16(frame[at]) << 8 | UInt16(frame[at + 1]) }
        let length = Int(word(udp + 4))
        guard length >= 8, udp + length <= frame.count else { return nil }
        return (word(udp), word(udp + 2), Array(frame[(udp + 8)..<(udp + length)]))
    }

    /// The Internet checksum (RFC 1071) of `bytes`.
    public static func internetChecksum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var index = 0
        while index + 1 < bytes.count {
            sum += UInt32(bytes[index]) << 8 | UInt32(bytes[index + 1])
            index += 2
        }
        if index < bytes.count { sum += UInt32(bytes[index]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
        return ~UInt16(sum)
    }
}

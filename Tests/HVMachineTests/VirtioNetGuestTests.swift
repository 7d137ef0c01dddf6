import Glibc
import GuestImages
import HVDevicesTesting
import HVMachine
import Testing

/// virtio-net driven by the second driver: a tiny freestanding guest (Guests/tender/
/// virtio_net_responder.c) with its own virtio-mmio driver, on real KVM and a real tap in a
/// network namespace of its own. The host pings it and echoes UDP through it with its own
/// sockets, made in that namespace; the guest answers ARP itself.
@Suite("virtio-net with a tiny guest driver", .serialized, .requiresKVM,
       .enabled(if: ConfiguredTap.unavailableReason == nil, Comment(rawValue: ConfiguredTap.unavailableReason ?? "")))
struct VirtioNetGuestTests {
    @Test func theGuestAnswersAHundredPingsAndEchoesUDPByteIdentical() throws {
        let tap = try ConfiguredTap()
        let serial = CollectingSink()
        var table = HypercallTable()
        try table.install(ConsoleService(output: serial))
        try table.install(LifecycleService())
        let machine = try Machine(memorySize: 16 << 20)
        let network = try machine.addNetwork(backend: tap.backend, mac: MACAddress("52:54:00:65:43:21") ?? .random())
        let address = tap.guestAddress.enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        try machine.load(.unikernel(image: GuestImages.virtioNetResponder, hypercalls: table,
                                    argument: address | (network.slot.window.start.rawValue >> 12) << 32))
        let watchdog = Watchdog(machine, seconds: 120)
        try machine.start()
        defer {
            machine.stop()
            _ = machine.wait()
            watchdog.cancel()
        }
        try #require(waitUntil(seconds: 60) { serial.text.contains("responder ready") }, "the guest did not start: \(serial.text)")

        #expect(try Self.ping(tap.guestAddress, count: 100, through: tap) == 100)

        let socketFD = try tap.socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(socketFD) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(socketFD, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var guest = Self.socketAddress(tap.guestAddress, port: 7)
        for frameLength in [60, 61, 128, 512, 1000, 1513, 1514] {
            let payload = (0..<(frameLength - 42)).map { UInt8(truncatingIfNeeded: $0 &* 11 &+ frameLength) }
            let sent = withUnsafePointer(to: &guest) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(socketFD, payload, payload.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            try #require(sent == payload.count)
            var echo = [UInt8](repeating: 0, count: 2048)
            let received = recv(socketFD, &echo, echo.count, 0)
            #expect(received == payload.count && Array(echo.prefix(max(received, 0))) == payload, "\(frameLength)-byte frame")
        }

        // A datagram to port 9 ends the guest.
        var discard = Self.socketAddress(tap.guestAddress, port: 9)
        _ = withUnsafePointer(to: &discard) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(socketFD, "bye", 3, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        let result = machine.wait()
        #expect("\(result.stopReason)".contains("status 0"), "\(result.stopReason)")
        #expect(network.device.counts.droppedReceiveFrames == 0 && network.device.counts.droppedTransmitFrames == 0)
    }

    static func socketAddress(_ address: [UInt8], port: UInt16) -> sockaddr_in {
        var socketAddress = sockaddr_in()
        socketAddress.sin_family = sa_family_t(AF_INET)
        socketAddress.sin_port = port.bigEndian
        socketAddress.sin_addr.s_addr = address.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        return socketAddress
    }

    /// Sends `count` ICMP echo requests to `address` one after another (a raw socket in the
    /// tap's namespace: root) and counts the matching replies.
    static func ping(_ address: [UInt8], count: Int, through tap: ConfiguredTap) throws -> Int {
        let socketFD = try tap.socket(AF_INET, Int32(SOCK_RAW.rawValue), Int32(IPPROTO_ICMP))
        defer { close(socketFD) }
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(socketFD, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var target = socketAddress(address, port: 0)
        let identifier = UInt16(truncatingIfNeeded: getpid())
        var replies = 0
        for sequence in 1...count {
            var request: [UInt8] = [8, 0, 0, 0, UInt8(identifier >> 8), UInt8(identifier & 0xFF), UInt8(sequence >> 8), UInt8(sequence & 0xFF)]
            request += (0..<56).map { UInt8(truncatingIfNeeded: $0 &+ sequence) }
            let sum = EthernetFrames.internetChecksum(request)
            request[2] = UInt8(sum >> 8)
            request[3] = UInt8(sum & 0xFF)
            let sent = withUnsafePointer(to: &target) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(socketFD, request, request.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard sent == request.count else { continue }
            var reply = [UInt8](repeating: 0, count: 256)
            while true {
                let received = recv(socketFD, &reply, reply.count, 0)
                guard received > 0 else { break }
                let header = Int(reply[0] & 0x0F) * 4
                guard received >= header + 8 + 56, Array(reply[12..<16]) == address else { continue }
                let icmp = Array(reply[header..<received])
                if icmp[0] == 0, icmp[4] == request[4], icmp[5] == request[5], icmp[6] == request[6], icmp[7] == request[7],
                   Array(icmp[8...]) == Array(request[8...]) {
                    replies += 1
                    break
                }
            }
        }
        return replies
    }
}

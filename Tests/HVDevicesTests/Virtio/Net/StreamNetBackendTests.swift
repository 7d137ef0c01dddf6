import Glibc
import HVCore
@testable import HVDevices
import HVDevicesTesting
import HVTestSupport
import SystemPackage
import Testing

/// A virtio-net device on one end of a Unix stream socket pair speaking passt's framing; the
/// test writes and reads the other end.
final class StreamRig {
    let rig: NetRig
    let peer: Int32

    init(mtu: UInt16 = 1500, features: VirtioFeatures? = nil) throws {
        var descriptors: [Int32] = [-1, -1]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &descriptors) == 0)
        peer = descriptors[1]
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(peer, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let backend = try StreamNetBackend(connected: FileDescriptor(rawValue: descriptors[0]), name: "stream test")
        rig = try NetRig(mtu: mtu, features: features, backend: backend)
    }

    deinit { close(peer) }

    /// `frame` behind its 4-byte big-endian length.
    static func framed(_ frame: [UInt8]) -> [UInt8] {
        let length = UInt32(frame.count)
        return [UInt8(length >> 24), UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF)] + frame
    }

    func peerWrite(_ bytes: [UInt8]) throws {
        try #require(bytes.withUnsafeBytes { send(peer, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count)
    }

    func peerRead(_ count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        var total = 0
        while total < count {
            let read = bytes[total...].withUnsafeMutableBytes { recv(peer, $0.baseAddress, $0.count, 0) }
            try #require(read > 0, "the device sent \(total) of \(count) bytes")
            total += read
        }
        return bytes
    }

    /// The frames the device delivered, in order (headers dropped), waiting for `count`.
    func delivered(_ count: Int) throws -> [[UInt8]] {
        try rig.waitForReceived(count).map { entry in
            Array(try rig.contents(ofReceiveChain: entry.id, length: entry.length).dropFirst(NetHeader.size))
        }
    }
}

@Suite("virtio-net over a stream socket (passt's framing)")
struct StreamNetBackendTests {
    @Test func wholeFramesArriveBehindAPlainHeader() throws {
        let stream = try StreamRig()
        try stream.rig.postReceiveBuffers(4)
        let frames = [60, 1514, 100].enumerated().map { testFrame(length: $1, seed: UInt8($0)) }
        try stream.peerWrite(frames.flatMap(StreamRig.framed))
        let used = try stream.rig.waitForReceived(3)
        #expect(used.map(\.length) == frames.map { UInt32(NetHeader.size + $0.count) })
        for (entry, frame) in zip(used, frames) {
            let bytes = try stream.rig.contents(ofReceiveChain: entry.id, length: entry.length)
            #expect(Array(bytes.prefix(10)) == [UInt8](repeating: 0, count: 10))
            #expect(Array(bytes.dropFirst(NetHeader.size)) == frame)
        }
    }

    /// A frame that arrives in pieces (the length itself split) is gathered and delivered
    /// whole, and the framing holds for the next one.
    @Test func aFrameInPiecesIsGatheredWhole() throws {
        let stream = try StreamRig()
        try stream.rig.postReceiveBuffers(4)
        let first = StreamRig.framed(testFrame(length: 900, seed: 1))
        for cut in [(0, 2), (2, 300), (300, first.count)] {
            try stream.peerWrite(Array(first[cut.0..<cut.1]))
            usleep(5000)
        }
        try stream.peerWrite(StreamRig.framed(testFrame(length: 70, seed: 2)))
        #expect(try stream.delivered(2) == [testFrame(length: 900, seed: 1), testFrame(length: 70, seed: 2)])
    }

    /// Without MRG_RXBUF, a frame larger than the buffer is read past and dropped; the stream
    /// keeps its framing and the next frame lands in the same buffer.
    @Test func anOversizedFrameIsDroppedWithoutLosingTheFraming() throws {
        let offered = try NetRig().mmio.offeredFeatures
        let stream = try StreamRig(mtu: 9000, features: offered.subtracting(.netMergeableReceiveBuffers))
        try stream.rig.postReceiveBuffers(1)
        try stream.peerWrite(StreamRig.framed(testFrame(length: 5000)) + StreamRig.framed(testFrame(length: 80, seed: 4)))
        #expect(try stream.delivered(1) == [testFrame(length: 80, seed: 4)])
        #expect(stream.rig.device.counts.droppedReceiveFrames == 1)
    }

    @Test func transmittedFramesGoOutBehindTheirLength() throws {
        let stream = try StreamRig()
        for length in [60, 1514] {
            let frame = testFrame(length: length, seed: 5)
            try stream.rig.transmit(frame, pieces: 3)
            #expect(try stream.peerRead(4 + length) == StreamRig.framed(frame))
        }
    }

    @Test func aLengthBeyondAnyFrameIsAnError() throws {
        let stream = try StreamRig()
        try stream.rig.postReceiveBuffers(2)
        try stream.peerWrite([0x7F, 0xFF, 0xFF, 0xFF] + [UInt8](repeating: 0, count: 64))
        // The event loop reads the length on its own thread: wait for its verdict (a fixed
        // 20 ms was not always enough on a loaded host).
        #expect(waitUntil { stream.rig.device.guestEvents.count(of: "backend-error") >= 1 })
        #expect(stream.rig.device.counts.receivedFrames == 0)
        #expect(waitUntil { !stream.rig.device.isWatchingBackend })
    }
}

@Suite("virtio-net through passt", .enabled(if: PasstProcess.unavailableReason == nil, Comment(rawValue: PasstProcess.unavailableReason ?? "")))
struct PasstTests {
    /// A real passt on its Unix socket: the driver asks by ARP for passt's gateway address
    /// and passt answers through the device.
    @Test func passtAnswersAnARPRequestThroughTheDevice() throws {
        let passt = try PasstProcess(socketPath: "/tmp/hvkit-passt-\(getpid()).socket")
        let connected = Locked<StreamNetBackend?>(nil)
        _ = waitUntil {
            let backend = try? StreamNetBackend(path: passt.socketPath)
            connected.withLock { $0 = backend }
            return backend != nil
        }
        let backend: StreamNetBackend = try #require(connected.withLock { $0 }, "passt's socket did not accept")
        let rig = try NetRig(backend: backend)
        try rig.postReceiveBuffers(8)
        // ARP request: who has the gateway? tell the guest's address.
        let request = [UInt8](repeating: 0xFF, count: 6) + guestMAC + [0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 1]
            + guestMAC + passt.guestAddress + [UInt8](repeating: 0, count: 6) + passt.gateway
        try rig.transmit(request)
        var reply: [UInt8]?
        _ = try waitUntil {
            for entry in try rig.waitForReceived(1) {
                let frame = Array(try rig.contents(ofReceiveChain: entry.id, length: entry.length).dropFirst(NetHeader.size))
                if frame.count >= 42, frame[12] == 0x08, frame[13] == 0x06, frame[21] == 2 { reply = frame }
            }
            return reply != nil
        }
        let answer = try #require(reply, "passt did not answer the ARP request")
        #expect(Array(answer[0..<6]) == guestMAC)
        #expect(Array(answer[28..<32]) == passt.gateway, "the reply is for the gateway")
        #expect(Array(answer[38..<42]) == passt.guestAddress)
    }
}

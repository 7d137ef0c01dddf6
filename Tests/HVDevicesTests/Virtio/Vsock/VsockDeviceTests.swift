import Glibc
import HVCore
import HVDevices
import HVDevicesTesting
import HVTestSupport
import SystemPackage
import Testing

/// A vsock device with guest CID 3 behind its MMIO transport, driven by the test kit's
/// driver; the test plays both the guest (through the driver) and the host programs.
final class VsockRig {
    static let cid: UInt64 = 3
    private static let counter = Locked(0)

    let memory: GuestMemoryMmap
    let loop: EventLoop
    let device: VsockDevice
    let driver: VsockDriver
    let path: String?

    init(socket: Bool = true, limits: VsockLimits = VsockLimits()) throws {
        memory = try testMemory()
        loop = try EventLoop(name: "vsock-test")
        let number = Self.counter.withLock { value in
            value += 1
            return value
        }
        path = socket ? "/tmp/hvkit-vsock-\(getpid())-\(number).sock" : nil
        device = try VsockDevice(guestCID: Self.cid, socketPath: path, eventLoop: loop, limits: limits, queueSize: 64)
        driver = try VsockDriver(device: device, memory: memory, interruptLine: CountingInterruptLine())
    }

    deinit {
        device.close()
        loop.shutdown()
    }

    /// Packets until one satisfies `match` (or 20 seconds pass); that one, if it came.
    func waitForPacket(_ match: (VsockHeader) -> Bool) throws -> (header: VsockHeader, data: [UInt8])? {
        try driver.receive { packets in packets.contains { match($0.header) } }.first { match($0.header) }
    }

    /// The guest opens a connection from `guestPort` to `hostPort`; returns the device's answer.
    func guestConnects(from guestPort: UInt32, to hostPort: UInt32, bufferAllocation: UInt32 = 64 << 10) throws -> VsockHeader? {
        try driver.send(driver.header(.request, from: guestPort, to: hostPort, bufferAllocation: bufferAllocation))
        return try waitForPacket { $0.destinationPort == guestPort && $0.sourcePort == hostPort }?.header
    }

    /// Data the device sends on the connection `guestPort`–`hostPort`, `count` bytes of it,
    /// acknowledging with credit updates as a driver whose reader keeps up does.
    func guestReceives(_ count: Int, guestPort: UInt32, hostPort: UInt32, bufferAllocation: UInt32 = 64 << 10) throws -> [UInt8] {
        var bytes: [UInt8] = []
        let deadline = HostClock.monotonicDeadline(after: .seconds(30))
        while bytes.count < count, HostClock.monotonicNanoseconds() < deadline {
            let before = bytes.count
            for packet in try driver.receive()
            where packet.header.operation == .readWrite && packet.header.destinationPort == guestPort {
                bytes += packet.data
            }
            if bytes.count != before {
                try driver.send(driver.header(.creditUpdate, from: guestPort, to: hostPort, bufferAllocation: bufferAllocation,
                                              forwardCount: UInt32(truncatingIfNeeded: bytes.count)))
            } else {
                usleep(200)
            }
        }
        return bytes
    }
}

/// Reads exactly `count` bytes from a blocking socket (or fewer at end of file).
func readAll(_ descriptor: FileDescriptor, count: Int) -> [UInt8] {
    var result: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while result.count < count {
        let got = read(descriptor.rawValue, &buffer, min(buffer.count, count - result.count))
        if got <= 0 { break }
        result += buffer.prefix(got)
    }
    return result
}

/// Writes all of `bytes` to a blocking socket.
func writeAll(_ descriptor: FileDescriptor, _ bytes: [UInt8]) {
    var offset = 0
    while offset < bytes.count {
        let written = bytes[offset...].withUnsafeBytes { write(descriptor.rawValue, $0.baseAddress, $0.count) }
        if written <= 0 { return }
        offset += written
    }
}

/// Sets a receive timeout on a socket so that a test waiting for bytes that never come ends.
func setReceiveTimeout(_ descriptor: FileDescriptor, seconds: Int = 5) {
    var timeout = timeval(tv_sec: seconds, tv_usec: 0)
    setsockopt(descriptor.rawValue, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
}

/// Connects a blocking client to the device's Unix socket.
func connectClient(_ path: String) throws -> FileDescriptor {
    let client = try UnixSocket.connect(to: path, nonBlocking: false)
    setReceiveTimeout(client)
    return client
}

func pattern(_ count: Int, seed: Int = 0) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: ($0 &* 31) ^ ($0 >> 8) &+ seed) }
}

@Suite("virtio-vsock device")
struct VsockDeviceTests {
    @Test func reportsItsTypeAndTheGuestCID() throws {
        let rig = try VsockRig(socket: false)
        #expect(rig.device.deviceType == .vsock)
        #expect(rig.device.configuration == [3, 0, 0, 0, 0, 0, 0, 0])
        #expect(rig.device.queueMaxSizes.count == 3)
        #expect(rig.driver.mmio.status.contains(.driverOK))
        let loop = try EventLoop(name: "vsock-cid")
        defer { loop.shutdown() }
        for cid: UInt64 in [0, 1, 2, 0xFFFF_FFFF, 1 << 32] {
            #expect(throws: VsockError.invalidGuestCID(cid)) { try VsockDevice(guestCID: cid, eventLoop: loop) }
        }
    }

    @Test func aGuestConnectionReachesAnInProcessListener() throws {
        let rig = try VsockRig(socket: false)
        let accepted = Locked<[FileDescriptor]>([])
        rig.device.listen(port: 7000) { descriptor in accepted.withLock { $0.append(descriptor) } }
        let answer = try #require(try rig.guestConnects(from: 1024, to: 7000))
        #expect(answer.operation == .response && answer.destinationCID == VsockRig.cid && answer.sourceCID == 2)
        #expect(answer.bufferAllocation == 64 << 10)
        let host = try #require(accepted.withLock { $0.first })
        defer { close(host.rawValue) }
        setReceiveTimeout(host)

        // Guest to host.
        let outbound = pattern(3000, seed: 1)
        try rig.driver.send(rig.driver.header(.readWrite, from: 1024, to: 7000), data: outbound)
        #expect(readAll(host, count: outbound.count) == outbound)
        // Host to guest, straight into the guest's buffers, in packets of at most 4 KiB.
        let inbound = pattern(10000, seed: 2)
        writeAll(host, inbound)
        #expect(try rig.guestReceives(inbound.count, guestPort: 1024, hostPort: 7000) == inbound)
        #expect(rig.device.connectionCount == 1)
    }

    /// Packets queued together go to the host socket together, in order, and the chains come
    /// back once their data is out; a control packet among them keeps its place.
    @Test func packetsQueuedTogetherArriveInOrder() throws {
        let rig = try VsockRig(socket: false)
        let accepted = Locked<FileDescriptor?>(nil)
        rig.device.listen(port: 7010) { descriptor in accepted.withLock { $0 = descriptor } }
        #expect(try rig.guestConnects(from: 1030, to: 7010)?.operation == .response)
        let host = try #require(accepted.withLock { $0 })
        defer { close(host.rawValue) }
        setReceiveTimeout(host)
        let pieces = (0..<12).map { pattern(4096, seed: $0) }
        var batch = pieces.prefix(6).map { (rig.driver.header(.readWrite, from: 1030, to: 7010), $0) }
        batch.append((rig.driver.header(.creditRequest, from: 1030, to: 7010), []))
        batch += pieces.suffix(6).map { (rig.driver.header(.readWrite, from: 1030, to: 7010), $0) }
        try rig.driver.send(batch: batch)
        #expect(byteDifference(readAll(host, count: 12 * 4096), pieces.flatMap { $0 }) == nil)
        #expect(try rig.waitForPacket { $0.operation == .creditUpdate } != nil)
    }

    /// A guest that sends as much as its credit allows, a batch per notification, and learns
    /// of freed space from the device's credit updates: 1 MiB arrives whole while the host reads.
    @Test func aGuestStreamsWithinItsCredit() throws {
        let rig = try VsockRig(socket: false)
        let accepted = Locked<FileDescriptor?>(nil)
        rig.device.listen(port: 7011) { descriptor in accepted.withLock { $0 = descriptor } }
        #expect(try rig.guestConnects(from: 1031, to: 7011)?.operation == .response)
        let host = try #require(accepted.withLock { $0 })
        defer { close(host.rawValue) }
        setReceiveTimeout(host)
        let total = 1 << 20
        let pieces = (0..<(total / 4096)).map { pattern(4096, seed: $0) }
        let received = Locked<[UInt8]>([])
        let reader = try HostThread(name: "vsock-test-reader") { received.withLock { $0 = readAll(host, count: total) } }
        var sent = 0
        var forwarded: UInt32 = 0
        // A watchdog for sanitizer builds, where this takes seconds.
        let deadline = HostClock.monotonicDeadline(after: .seconds(120))
        while sent < total, HostClock.monotonicNanoseconds() < deadline {
            for packet in try rig.driver.receive() where packet.header.destinationPort == 1031 {
                forwarded = packet.header.forwardCount
            }
            var room = (64 << 10) - Int(UInt32(truncatingIfNeeded: sent) &- forwarded)
            var batch: [(header: VsockHeader, data: [UInt8])] = []
            while room >= 4096, sent < total, batch.count < 16 {
                batch.append((rig.driver.header(.readWrite, from: 1031, to: 7011), pieces[sent / 4096]))
                sent += 4096
                room -= 4096
            }
            if batch.isEmpty { usleep(100) } else { try rig.driver.send(batch: batch) }
        }
        reader.join()
        #expect(sent == total)
        #expect(byteDifference(received.withLock { $0 }, pieces.flatMap { $0 }) == nil)
    }

    @Test func aGuestConnectionReachesTheUnixSocketForItsPort() throws {
        let rig = try VsockRig()
        let path = try #require(rig.path)
        let listener = try UnixSocket.listen(at: "\(path)_1024")
        defer {
            close(listener.rawValue)
            unlink("\(path)_1024")
        }
        let answer = try #require(try rig.guestConnects(from: 4000, to: 1024))
        #expect(answer.operation == .response)
        var host: FileDescriptor?
        _ = waitUntil { host = try? UnixSocket.accept(listener); return host != nil }
        let connection = try #require(host)
        defer { close(connection.rawValue) }
        try UnixSocket.setNonBlocking(connection)
        var flags = fcntl(connection.rawValue, F_GETFL)
        flags &= ~O_NONBLOCK
        _ = fcntl(connection.rawValue, F_SETFL, flags)
        setReceiveTimeout(connection)
        try rig.driver.send(rig.driver.header(.readWrite, from: 4000, to: 1024), data: Array("hello host".utf8))
        #expect(readAll(connection, count: 10) == Array("hello host".utf8))
    }

    @Test func aGuestConnectionToAPortNobodyListensOnIsReset() throws {
        let rig = try VsockRig()
        let answer = try #require(try rig.guestConnects(from: 4001, to: 9999))
        #expect(answer.operation == .reset)
        #expect(rig.device.connectionCount == 0)
        // Without a socket path only in-process listeners exist.
        let plain = try VsockRig(socket: false)
        #expect(try plain.guestConnects(from: 4001, to: 9999)?.operation == .reset)
    }

    @Test func aHostClientConnectsWithTheConnectLine() throws {
        let rig = try VsockRig()
        let client = try connectClient(try #require(rig.path))
        defer { close(client.rawValue) }
        // The line and the first data in one write: the data must not be taken as part of it.
        writeAll(client, Array("CONNECT 52\nearly".utf8))
        let request = try #require(try rig.waitForPacket { $0.operation == .request })
        #expect(request.header.destinationPort == 52 && request.header.destinationCID == VsockRig.cid)
        let hostPort = request.header.sourcePort
        #expect(hostPort >= 1 << 30)
        try rig.driver.send(rig.driver.header(.response, from: 52, to: hostPort))
        let ok = Array("OK \(hostPort)\n".utf8)
        #expect(readAll(client, count: ok.count) == ok)
        #expect(try rig.guestReceives(5, guestPort: 52, hostPort: hostPort) == Array("early".utf8))
        // And back.
        try rig.driver.send(rig.driver.header(.readWrite, from: 52, to: hostPort), data: Array("reply".utf8))
        #expect(readAll(client, count: 5) == Array("reply".utf8))
    }

    @Test func aHostClientIsClosedWhenTheGuestRefuses() throws {
        let rig = try VsockRig()
        let client = try connectClient(try #require(rig.path))
        defer { close(client.rawValue) }
        writeAll(client, Array("CONNECT 53\n".utf8))
        let request = try #require(try rig.waitForPacket { $0.operation == .request })
        try rig.driver.send(rig.driver.header(.reset, from: 53, to: request.header.sourcePort))
        #expect(readAll(client, count: 1).isEmpty, "closed without an answer")
        #expect(rig.device.connectionCount == 0)
    }

    @Test(arguments: ["CONNECT abc\n", "CONNECT\n", "CONNECT 99999999999\n", "HELLO 52\n", String(repeating: "x", count: 40)])
    func aMalformedConnectLineClosesTheClient(line: String) throws {
        let rig = try VsockRig()
        let client = try connectClient(try #require(rig.path))
        defer { close(client.rawValue) }
        writeAll(client, Array(line.utf8))
        #expect(readAll(client, count: 1).isEmpty)
        #expect(try rig.driver.receive().isEmpty, "no request reached the guest")
    }

    @Test func aHostClientThatNeverSendsItsLineIsClosedAfterTheTimeout() throws {
        let rig = try VsockRig(limits: VsockLimits(requestTimeout: .milliseconds(100)))
        let client = try connectClient(try #require(rig.path))
        defer { close(client.rawValue) }
        writeAll(client, Array("CONN".utf8))
        #expect(readAll(client, count: 1).isEmpty)
    }

    /// The timeout also bounds how long the host's CONNECT line may take to arrive, so it is a
    /// second here: with 100 ms, a loaded sanitizer run once timed the line out before the
    /// event loop read it, and no request reached the guest at all.
    @Test func aGuestThatDoesNotAnswerAConnectionRequestIsResetAfterTheTimeout() throws {
        let rig = try VsockRig(limits: VsockLimits(requestTimeout: .seconds(1)))
        let client = try connectClient(try #require(rig.path))
        defer { close(client.rawValue) }
        writeAll(client, Array("CONNECT 54\n".utf8))
        #expect(readAll(client, count: 1).isEmpty)
        let packets = try rig.driver.receive(for: 20) { packets in packets.contains { $0.header.operation == .reset } }
        #expect(packets.map(\.header.operation) == [.request, .reset])
    }

    @Test func inProcessConnectWaitsForTheGuest() throws {
        let rig = try VsockRig(socket: false)
        let answered = Locked<Result<FileDescriptor, VsockConnectError>?>(nil)
        rig.device.connect(toGuestPort: 80) { result in answered.withLock { $0 = result } }
        let request = try #require(try rig.waitForPacket { $0.operation == .request })
        #expect(request.header.destinationPort == 80)
        #expect(answered.withLock { $0 } == nil)
        try rig.driver.send(rig.driver.header(.response, from: 80, to: request.header.sourcePort))
        _ = waitUntil { answered.withLock { $0 } != nil }
        let host = try #require(try answered.withLock { $0 }?.get())
        defer { close(host.rawValue) }
        setReceiveTimeout(host)
        try rig.driver.send(rig.driver.header(.readWrite, from: 80, to: request.header.sourcePort), data: [1, 2, 3])
        #expect(readAll(host, count: 3) == [1, 2, 3])

        // Refused, and timed out.
        rig.device.connect(toGuestPort: 81) { result in answered.withLock { $0 = result } }
        let second = try #require(try rig.waitForPacket { $0.operation == .request && $0.destinationPort == 81 })
        try rig.driver.send(rig.driver.header(.reset, from: 81, to: second.header.sourcePort))
        _ = waitUntil { answered.withLock { (try? $0?.get()) == nil && $0 != nil } }
        #expect(answered.withLock { $0 } == .failure(.refused))
        #expect(throws: VsockConnectError.timedOut) { try rig.device.connect(toGuestPort: 82, timeout: .milliseconds(50)) }
    }

    @Test func theDeviceNeverSendsMoreThanTheGuestsCredit() throws {
        let rig = try VsockRig(socket: false)
        let accepted = Locked<FileDescriptor?>(nil)
        rig.device.listen(port: 7001) { descriptor in accepted.withLock { $0 = descriptor } }
        #expect(try rig.guestConnects(from: 1025, to: 7001, bufferAllocation: 1000)?.operation == .response)
        let host = try #require(accepted.withLock { $0 })
        defer { close(host.rawValue) }
        writeAll(host, pattern(5000))
        // Only 1000 bytes until the guest says it consumed some.
        func data(_ packets: [(header: VsockHeader, data: [UInt8])]) -> [(header: VsockHeader, data: [UInt8])] {
            packets.filter { $0.header.operation == .readWrite }
        }
        // Collects until the credit is used, then a little longer for anything beyond it.
        var first = data(try rig.driver.receive { data($0).reduce(0) { $0 + $1.data.count } >= 1000 })
        first += data(try rig.driver.receive(for: 0.2) { _ in false })
        #expect(first.reduce(0) { $0 + $1.data.count } == 1000)
        try rig.driver.send(rig.driver.header(.creditUpdate, from: 1025, to: 7001, bufferAllocation: 1000, forwardCount: 600))
        var second = data(try rig.driver.receive { data($0).reduce(0) { $0 + $1.data.count } >= 600 })
        second += data(try rig.driver.receive(for: 0.2) { _ in false })
        #expect(second.reduce(0) { $0 + $1.data.count } == 600)
        #expect(Array((first + second).flatMap(\.data)) == Array(pattern(5000).prefix(1600)))
    }

    @Test func aGuestThatExceedsItsCreditIsReset() throws {
        let rig = try VsockRig(socket: false, limits: VsockLimits(bufferAllocation: 4096))
        let accepted = Locked<FileDescriptor?>(nil)
        rig.device.listen(port: 7002) { descriptor in accepted.withLock { $0 = descriptor } }
        #expect(try rig.guestConnects(from: 1026, to: 7002)?.bufferAllocation == 4096)
        defer { accepted.withLock { $0 }.map { _ = close($0.rawValue) } }
        // The host side does not read: the socket's buffer fills, then the device's 4 KiB.
        var sent = 0
        var reset = false
        for _ in 0..<200 where !reset {
            try rig.driver.send(rig.driver.header(.readWrite, from: 1026, to: 7002, forwardCount: 0), data: pattern(4096))
            sent += 4096
            reset = try rig.driver.receive().contains { $0.header.operation == .reset }
            #expect(rig.device.bufferedTowardsHost.values.allSatisfy { $0 <= 4096 })
        }
        #expect(reset, "reset after \(sent) bytes")
        #expect(rig.device.connectionCount == 0)
    }

    @Test func aSlowHostReaderHoldsAtMostTheBufferWhileOthersGoOn() throws {
        let rig = try VsockRig(socket: false)
        let accepted = Locked<[UInt32: FileDescriptor]>([:])
        for port: UInt32 in [7003, 7004] {
            rig.device.listen(port: port) { descriptor in accepted.withLock { $0[port] = descriptor } }
        }
        #expect(try rig.guestConnects(from: 1100, to: 7003)?.operation == .response)
        #expect(try rig.guestConnects(from: 1101, to: 7004)?.operation == .response)
        let slow = try #require(accepted.withLock { $0[7003] })
        let fast = try #require(accepted.withLock { $0[7004] })
        defer { close(slow.rawValue); close(fast.rawValue) }
        setReceiveTimeout(fast)
        // A guest that respects credit: it stops when the device's advertised buffer is full.
        var credit = 64 << 10
        var peerForwarded: UInt32 = 0
        var sentSlow = 0
        for _ in 0..<400 {
            for packet in try rig.driver.receive() where packet.header.destinationPort == 1100 {
                peerForwarded = packet.header.forwardCount
            }
            credit = (64 << 10) - (sentSlow - Int(peerForwarded))
            guard credit >= 4096 else { break }
            try rig.driver.send(rig.driver.header(.readWrite, from: 1100, to: 7003), data: pattern(4096))
            sentSlow += 4096
        }
        #expect(try #require(rig.device.bufferedTowardsHost[7003]) <= 64 << 10)
        #expect(try #require(rig.device.bufferedTowardsHost[7003]) > 0, "the socket's own buffer filled first")
        // The other connection is not held up.
        try rig.driver.send(rig.driver.header(.readWrite, from: 1101, to: 7004), data: Array("still moving".utf8))
        #expect(readAll(fast, count: 12) == Array("still moving".utf8))
        // Once the slow reader reads, everything arrives in order.
        setReceiveTimeout(slow)
        #expect(byteDifference(readAll(slow, count: sentSlow), Array((0..<(sentSlow / 4096)).flatMap { _ in pattern(4096) })) == nil)
    }

    @Test func shutdownsAndResetsEndConnectionsBothWays() throws {
        let rig = try VsockRig(socket: false)
        let accepted = Locked<[FileDescriptor]>([])
        rig.device.listen(port: 7005) { descriptor in accepted.withLock { $0.append(descriptor) } }

        // The guest stops sending: the host reads end of file, and can still send.
        #expect(try rig.guestConnects(from: 1200, to: 7005)?.operation == .response)
        let first = try #require(accepted.withLock { $0.last })
        defer { close(first.rawValue) }
        setReceiveTimeout(first)
        try rig.driver.send(rig.driver.header(.readWrite, from: 1200, to: 7005), data: [9, 9])
        try rig.driver.send(rig.driver.header(.shutdown, from: 1200, to: 7005, flags: VsockHeader.ShutdownFlags.send.rawValue))
        #expect(readAll(first, count: 3) == [9, 9], "the bytes, then end of file")
        writeAll(first, [7])
        #expect(try rig.guestReceives(1, guestPort: 1200, hostPort: 7005) == [7])
        // The host closes: SHUTDOWN(send) first as its end of file, then the device ends it
        // since neither side sends any more.
        Glibc.shutdown(first.rawValue, Int32(SHUT_WR))
        let ending = try rig.driver.receive(for: 20) { $0.contains { $0.header.operation == .reset } }
        #expect(ending.map(\.header.operation).contains(.shutdown))
        _ = waitUntil { rig.device.connectionCount == 0 }
        #expect(rig.device.connectionCount == 0)

        // The guest resets: the host reads end of file.
        #expect(try rig.guestConnects(from: 1201, to: 7005)?.operation == .response)
        let second = try #require(accepted.withLock { $0.last })
        defer { close(second.rawValue) }
        setReceiveTimeout(second)
        try rig.driver.send(rig.driver.header(.reset, from: 1201, to: 7005))
        #expect(readAll(second, count: 1).isEmpty)

        // The host closes outright: SHUTDOWN of both halves... 
        #expect(try rig.guestConnects(from: 1202, to: 7005)?.operation == .response)
        let third = try #require(accepted.withLock { $0.last })
        close(third.rawValue)
        let shutdown = try #require(try rig.waitForPacket { $0.operation == .shutdown && $0.destinationPort == 1202 })
        #expect(shutdown.header.shutdownFlags.contains(.send))
        try rig.driver.send(rig.driver.header(.reset, from: 1202, to: 7005))
        _ = waitUntil { rig.device.connectionCount == 0 }
        #expect(rig.device.connectionCount == 0)
    }

    @Test func transportResetEndsEveryConnectionAndTellsTheDriver() throws {
        let rig = try VsockRig(socket: false)
        let accepted = Locked<FileDescriptor?>(nil)
        rig.device.listen(port: 7006) { descriptor in accepted.withLock { $0 = descriptor } }
        #expect(try rig.guestConnects(from: 1300, to: 7006)?.operation == .response)
        let host = try #require(accepted.withLock { $0 })
        defer { close(host.rawValue) }
        setReceiveTimeout(host)
        rig.device.resetTransport()
        #expect(try rig.driver.events() == [0])
        #expect(rig.device.connectionCount == 0)
        #expect(readAll(host, count: 1).isEmpty)
        // Listeners stay.
        #expect(try rig.guestConnects(from: 1301, to: 7006)?.operation == .response)
    }
}

@Suite("virtio-vsock hostile guest")
struct VsockHostileGuestTests {
    func connected(_ rig: VsockRig, guestPort: UInt32 = 2000, hostPort: UInt32 = 8000) throws -> FileDescriptor {
        let accepted = Locked<FileDescriptor?>(nil)
        rig.device.listen(port: hostPort) { descriptor in accepted.withLock { $0 = descriptor } }
        #expect(try rig.guestConnects(from: guestPort, to: hostPort)?.operation == .response)
        return try #require(accepted.withLock { $0 })
    }

    @Test func packetsWithTheWrongAddressesAreDropped() throws {
        let rig = try VsockRig(socket: false)
        var wrongSource = rig.driver.header(.request, from: 2000, to: 8000)
        wrongSource.sourceCID = 4
        var wrongDestination = rig.driver.header(.request, from: 2000, to: 8000)
        wrongDestination.destinationCID = 5
        try rig.driver.send(wrongSource)
        try rig.driver.send(wrongDestination)
        #expect(try rig.driver.receive(for: 0.2) { _ in false }.isEmpty)
        #expect(rig.device.guestEvents.count(of: "wrong-cid") == 2)
    }

    @Test func packetsForNoConnectionAreAnsweredWithReset() throws {
        let rig = try VsockRig(socket: false)
        for operation: VsockHeader.Operation in [.readWrite, .response, .shutdown, .creditUpdate, .creditRequest, .invalid] {
            try rig.driver.send(rig.driver.header(operation, from: 2001, to: 8001))
        }
        // An RST is not answered (two sides would answer each other for ever).
        try rig.driver.send(rig.driver.header(.reset, from: 2001, to: 8001))
        let packets = try rig.driver.receive(for: 20) { $0.count >= 6 }
        #expect(packets.count == 6 && packets.allSatisfy { $0.header.operation == .reset })
        #expect(try rig.driver.receive(for: 0.1) { _ in false }.isEmpty)
    }

    @Test func aRequestOfAnotherSocketTypeIsReset() throws {
        let rig = try VsockRig(socket: false)
        rig.device.listen(port: 8002) { close($0.rawValue) }
        var seqpacket = rig.driver.header(.request, from: 2002, to: 8002)
        seqpacket.type = 2
        try rig.driver.send(seqpacket)
        #expect(try rig.waitForPacket { _ in true }?.header.operation == .reset)
        #expect(rig.device.connectionCount == 0)
    }

    @Test func protocolViolationsOnAConnectionResetIt() throws {
        for violation in [VsockHeader.Operation.request, .response] {
            let rig = try VsockRig(socket: false)
            let host = try connected(rig)
            defer { close(host.rawValue) }
            try rig.driver.send(rig.driver.header(violation, from: 2000, to: 8000))
            #expect(try rig.waitForPacket { $0.operation == .reset } != nil)
            #expect(rig.device.connectionCount == 0)
        }
        let rig = try VsockRig(socket: false)
        let host = try connected(rig)
        defer { close(host.rawValue) }
        var unknown = rig.driver.header(.readWrite, from: 2000, to: 8000)
        unknown.operationCode = 99
        try rig.driver.send(unknown)
        #expect(try rig.waitForPacket { $0.operation == .reset } != nil)
    }

    @Test func dataBeforeTheGuestAcceptedIsReset() throws {
        let rig = try VsockRig(socket: false)
        rig.device.connect(toGuestPort: 90) { _ in }
        let request = try #require(try rig.waitForPacket { $0.operation == .request })
        try rig.driver.send(rig.driver.header(.readWrite, from: 90, to: request.header.sourcePort), data: [1, 2, 3])
        #expect(try rig.waitForPacket { $0.operation == .reset } != nil)
        #expect(rig.device.connectionCount == 0)
    }

    @Test func lengthsThatDisagreeWithTheChainAreRefused() throws {
        let rig = try VsockRig(socket: false)
        let host = try connected(rig)
        defer { close(host.rawValue) }
        setReceiveTimeout(host, seconds: 1)
        // len says 100; the chain holds 10 bytes of data.
        try rig.driver.send(rig.driver.header(.readWrite, from: 2000, to: 8000, flags: 0), data: pattern(10), fixLength: false)
        var header = rig.driver.header(.readWrite, from: 2000, to: 8000)
        header.length = 100
        try rig.driver.send(header, data: pattern(10), fixLength: false)
        // len above the 64 KiB a packet may carry.
        header.length = 1 << 20
        try rig.driver.send(header, data: pattern(10), fixLength: false)
        // A chain shorter than a header, and one with a device-writable descriptor.
        try rig.driver.sendChain([(rig.driver.scratch, 20, false)])
        try rig.driver.sendChain([(rig.driver.scratch, 44, false), (GuestAddress(rig.driver.scratch.rawValue + 0x100), 64, true)])
        #expect(rig.device.guestEvents.count(of: "malformed-packet") == 4)
        #expect(!rig.driver.needsReset)
        // Nothing of it reached the host; the connection still works.
        try rig.driver.send(rig.driver.header(.readWrite, from: 2000, to: 8000), data: [42])
        #expect(readAll(host, count: 1) == [42])
    }

    /// A descriptor outside guest RAM (in the hole, or wrapping past 2^64) is no chain at all:
    /// the queue breaks and the device asks for a reset, as every HVKit device does.
    @Test(arguments: [holeAddress, GuestAddress(UInt64.max - 10)])
    func aChainOutsideGuestMemoryBreaksTheQueue(address: GuestAddress) throws {
        let rig = try VsockRig(socket: false)
        let host = try connected(rig)
        defer { close(host.rawValue) }
        try rig.driver.sendChain([(address, 44, false)])
        #expect(rig.driver.needsReset)
        #expect(rig.device.connectionCount == 1, "nothing reached the connection")
    }

    @Test func aFloodOfRequestsPastTheLimitIsReset() throws {
        let rig = try VsockRig(socket: false, limits: VsockLimits(maximumConnections: 8))
        let accepted = Locked<[FileDescriptor]>([])
        rig.device.listen(port: 8003) { descriptor in accepted.withLock { $0.append(descriptor) } }
        defer { for descriptor in accepted.withLock({ $0 }) { close(descriptor.rawValue) } }
        for port in UInt32(3000)..<3020 {
            try rig.driver.send(rig.driver.header(.request, from: port, to: 8003))
        }
        let answers = try rig.driver.receive(for: 20) { $0.count >= 20 }
        #expect(answers.filter { $0.header.operation == .response }.count == 8)
        #expect(answers.filter { $0.header.operation == .reset }.count == 12)
        #expect(rig.device.connectionCount == 8)
    }

    @Test func receiveBuffersWithoutRoomForAHeaderBreakTheQueue() throws {
        let memory = try testMemory()
        let loop = try EventLoop(name: "vsock-hostile")
        defer { loop.shutdown() }
        let device = try VsockDevice(guestCID: 3, eventLoop: loop, queueSize: 64)
        let driver = try VsockDriver(device: device, memory: memory, interruptLine: CountingInterruptLine(), receiveBufferSize: 20)
        try driver.send(driver.header(.request, from: 1, to: 2))
        _ = waitUntil { driver.needsReset }
        #expect(driver.needsReset)
    }
}

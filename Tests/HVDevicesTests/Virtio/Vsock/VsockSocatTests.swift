import Glibc
import HVCore
import HVDevices
import HVDevicesTesting
import SystemPackage
import Testing

/// The host side driven by socat, a program nobody here wrote, with exactly the protocol's
/// strings; the guest side is the test kit's driver, answering as a guest's echo server would.
@Suite("virtio-vsock with socat")
struct VsockSocatTests {
    static let unavailableReason: String? = access("/usr/bin/socat", X_OK) == 0 ? nil : "needs socat (apt-get install socat)"

    @Test(.disabled(if: unavailableReason != nil, "\(unavailableReason ?? "")"))
    func socatConnectsSendsAndReadsTheEcho() throws {
        let rig = try VsockRig()
        let path = try #require(rig.path)
        let output = path + ".out"
        defer { unlink(output) }
        let status = Locked<Int32?>(nil)
        // socat half-closes after its input (the host's end of file) and waits up to 5 s for the rest.
        let socat = try HostThread(name: "socat") {
            let code = system("printf 'CONNECT 52\\nhello vsock' | socat -t 5 - UNIX-CONNECT:\(path) > \(output) 2>&1")
            status.withLock { $0 = code }
        }
        defer { socat.join() }

        let request = try #require(try rig.waitForPacket { $0.operation == .request })
        #expect(request.header.destinationPort == 52)
        let hostPort = request.header.sourcePort
        try rig.driver.send(rig.driver.header(.response, from: 52, to: hostPort))
        // The guest reads until the host's SHUTDOWN, then echoes and closes.
        var received: [UInt8] = []
        let packets = try rig.driver.receive(for: 5) { packets in packets.contains { $0.header.operation == .shutdown } }
        for packet in packets where packet.header.operation == .readWrite { received += packet.data }
        #expect(String(decoding: received, as: UTF8.self) == "hello vsock")
        try rig.driver.send(rig.driver.header(.readWrite, from: 52, to: hostPort), data: received.reversed())
        try rig.driver.send(rig.driver.header(.shutdown, from: 52, to: hostPort, flags: 3))
        #expect(waitUntil { status.withLock { $0 } != nil })
        let written = try HostFile.readAll(FilePath(output))
        #expect(String(decoding: written, as: UTF8.self) == "OK \(hostPort)\nkcosv olleh")
        #expect(status.withLock { $0 } == 0)
    }

    @Test(.disabled(if: unavailableReason != nil, "\(unavailableReason ?? "")"))
    func socatSeesTheSocketCloseWhenNothingListensInTheGuest() throws {
        let rig = try VsockRig()
        let path = try #require(rig.path)
        let output = path + ".out"
        defer { unlink(output) }
        let status = Locked<Int32?>(nil)
        let socat = try HostThread(name: "socat") {
            let code = system("printf 'CONNECT 99\\n' | socat -t 5 - UNIX-CONNECT:\(path) > \(output) 2>&1")
            status.withLock { $0 = code }
        }
        defer { socat.join() }
        let request = try #require(try rig.waitForPacket { $0.operation == .request })
        try rig.driver.send(rig.driver.header(.reset, from: 99, to: request.header.sourcePort))
        #expect(waitUntil { status.withLock { $0 } != nil })
        #expect(try HostFile.readAll(FilePath(output)).isEmpty, "no OK line")
    }
}

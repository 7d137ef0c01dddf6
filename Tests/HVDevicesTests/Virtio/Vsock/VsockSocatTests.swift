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

    /// socat on its own thread: `input` (printf's format) to the device's socket, what comes
    /// back to a file; it half-closes after its input and waits up to 5 s for the rest.
    final class Socat: Sendable {
        private final class Shared: Sendable { let status = Locked<Int32?>(nil) }
        let output: String
        private let shared = Shared()
        private let thread: HostThread

        init(input: String, path: String) throws {
            let output = path + ".out"
            self.output = output
            let shared = self.shared
            thread = try HostThread(name: "socat") {
                let code = system("printf '\(input)' | socat -t 5 - UNIX-CONNECT:\(path) > \(output) 2>&1")
                shared.status.withLock { $0 = code }
            }
        }

        /// Waits for socat to end and returns what it wrote and its status.
        func finish() throws -> (text: String, status: Int32?) {
            thread.join()
            defer { unlink(output) }
            return (String(decoding: try HostFile.readAll(FilePath(output)), as: UTF8.self), shared.status.withLock { $0 })
        }
    }

    @Test(.disabled(if: unavailableReason != nil, "\(unavailableReason ?? "")"))
    func socatConnectsSendsAndReadsTheEcho() throws {
        let rig = try VsockRig()
        let socat = try Socat(input: "CONNECT 52\\nhello vsock", path: try #require(rig.path))
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
        let ended = try socat.finish()
        #expect(ended.text == "OK \(hostPort)\nkcosv olleh")
        #expect(ended.status == 0)
    }

    @Test(.disabled(if: unavailableReason != nil, "\(unavailableReason ?? "")"))
    func socatSeesTheSocketCloseWhenNothingListensInTheGuest() throws {
        let rig = try VsockRig()
        let socat = try Socat(input: "CONNECT 99\\n", path: try #require(rig.path))
        let request = try #require(try rig.waitForPacket { $0.operation == .request })
        try rig.driver.send(rig.driver.header(.reset, from: 99, to: request.header.sourcePort))
        #expect(try socat.finish().text.isEmpty, "no OK line")
    }
}

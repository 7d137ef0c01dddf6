import Glibc
import GuestImages
import HVDevicesTesting
import HVMachine
import Testing

/// virtio-vsock driven by the second driver: a tiny freestanding guest (Guests/tender/
/// vsock_agent.c) with its own virtio-mmio driver, on real KVM. The host drives it through
/// the device's Unix socket exactly as host programs do (`CONNECT <port>\n`), and takes its
/// connection out at `<path>_<port>`.
@Suite("virtio-vsock with a tiny guest driver", .serialized, .requiresKVM)
struct VsockGuestTests {
    @Test func theGuestConnectsOutIsRefusedAndEchoesAQuarterMegabyte() throws {
        let serial = CollectingSink()
        var table = HypercallTable()
        try table.install(ConsoleService(output: serial))
        try table.install(LifecycleService())
        let machine = try Machine(memorySize: 16 << 20)
        let path = "/tmp/hvkit-vsock-guest-\(getpid()).sock"
        let vsock = try machine.addVsock(guestCID: 3, socketPath: path)
        let window = try #require(machine.virtioDevices.first { $0.device === vsock }?.window)
        let listener = try UnixSocket.listen(at: path + "_1024")
        defer {
            close(listener.rawValue)
            unlink(path + "_1024")
        }
        try machine.load(.unikernel(image: GuestImages.vsockAgent, hypercalls: table, argument: 1024 | (window.start.rawValue >> 12) << 32))
        let watchdog = Watchdog(machine, seconds: 120)
        try machine.start()
        defer {
            machine.stop()
            _ = machine.wait()
            watchdog.cancel()
        }
        try #require(waitUntil(seconds: 60) { serial.text.contains("vsock agent ready") }, "the guest did not start: \(serial.text)")

        // The guest's connection to host port 1024 reached <path>_1024, and port 1025 refused it.
        let outbound = try #require(try UnixSocket.accept(listener))
        defer { close(outbound.rawValue) }
        VsockPeers.makeBlocking(outbound)
        #expect(String(decoding: VsockPeers.receive(outbound, upTo: 21), as: UTF8.self) == "hello from the guest\n")
        #expect(serial.text.contains("vsock: connected out") && serial.text.contains("vsock: refused as expected"), "\(serial.text)")

        // CONNECT 52: OK, then 256 KiB of random bytes come back identical.
        let client = try UnixSocket.connect(to: path, nonBlocking: false)
        defer { close(client.rawValue) }
        VsockPeers.makeBlocking(client)
        #expect(VsockPeers.sendAll(client, Array("CONNECT 52\n".utf8)))
        let ok = String(decoding: Self.line(client), as: UTF8.self)
        #expect(ok.hasPrefix("OK ") && UInt32(ok.dropFirst(3)).map { $0 >= 1 << 30 } == true, "\(ok)")
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<(256 << 10)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let writer = try HostThread(name: "vsock-guest-send") { _ = VsockPeers.sendAll(client, bytes) }
        let echoed = VsockPeers.receive(client, upTo: bytes.count)
        writer.join()
        #expect(echoed.count == bytes.count && echoed == bytes)

        // A port nobody listens on in the guest, and a malformed line: the socket closes.
        for line in ["CONNECT 53\n", "CONNECT abc\n"] {
            let refused = try UnixSocket.connect(to: path, nonBlocking: false)
            defer { close(refused.rawValue) }
            VsockPeers.makeBlocking(refused)
            #expect(VsockPeers.sendAll(refused, Array(line.utf8)))
            #expect(Self.line(refused).isEmpty, "\(line.debugDescription) was answered")
        }
        // The one event on record is the guest's connection to port 1025, refused: no packet of
        // its was malformed.
        #expect(vsock.guestEvents.counts == ["refused-connection": 1])
    }

    /// The bytes up to a newline (without it), or what came before the socket closed.
    static func line(_ descriptor: FileDescriptor) -> [UInt8] {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while line.count < 64, read(descriptor.rawValue, &byte, 1) == 1, byte != UInt8(ascii: "\n") { line.append(byte) }
        return line
    }
}

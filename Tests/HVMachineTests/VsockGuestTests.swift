import Glibc
import GuestImages
import HVDevicesTesting
import HVMachine
import HVTestSupport
import Testing

/// virtio-vsock driven by the second driver: a tiny freestanding guest (Guests/tender/
/// vsock_agent.c) with its own virtio-mmio driver, on real KVM. The host drives it through
/// the device's Unix socket exactly as host programs do (`CONNECT <port>\n`), and takes its
/// connection out at `<path>_<port>`.
@Suite("virtio-vsock with a tiny guest driver", .serialized, .requiresKVM)
struct VsockGuestTests {
    @Test func theGuestConnectsOutIsRefusedEchoesAndPauses() throws {
        let serial = CollectingSink()
        var table = HypercallTable()
        try table.install(ConsoleService(output: serial))
        try table.install(LifecycleService())
        var configuration = MachineConfiguration(memorySize: 16 << 20)
        // Its event loop thread is "vsockguest-io": this test measures that thread alone, as
        // other tests may run in the process at the same time.
        configuration.name = "vsockguest"
        let machine = try Machine(configuration)
        let path = "/tmp/hvkit-vsock-guest-\(getpid()).sock"
        let vsock = try machine.addVsock(guestCID: 3, socketPath: path)
        let window = try #require(machine.virtioDevices.first { $0.device === vsock }?.window)
        let listener = try UnixSocket.listen(at: path + "_1024")
        defer {
            close(listener.rawValue)
            unlink(path + "_1024")
        }
        try machine.load(.unikernel(image: GuestImages.vsockAgent, hypercalls: table, argument: 1024 | (window.start.rawValue >> 12) << 32))
        // Only a guard against a hang: under ThreadSanitizer, beside other suites, this takes minutes.
        let watchdog = Watchdog(machine, seconds: 900)
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
        let bytes = Self.randomBytes(256 << 10)
        let writer = try HostThread(name: "vsock-guest-send") { _ = VsockPeers.sendAll(client, bytes) }
        let echoed = VsockPeers.receive(client, upTo: bytes.count)
        writer.join()
        #expect(byteDifference(echoed, bytes) == nil)

        // A host reader that stops reading: the VMM holds at most the 64 KiB it advertised for
        // that connection, and another connection's echo goes on meanwhile.
        let slow = try Self.connect52(path)
        defer { close(slow.descriptor.rawValue) }
        let stalled = Self.randomBytes(512 << 10)
        let slowWriter = try HostThread(name: "vsock-guest-slow") { _ = VsockPeers.sendAll(slow.descriptor, stalled) }
        #expect(waitUntil(seconds: 120) { (vsock.bufferedTowardsHost[slow.hostPort] ?? 0) > 0 }, "the slow connection's bytes never waited in the VMM")
        let fast = try Self.connect52(path)
        defer { close(fast.descriptor.rawValue) }
        let quick = Array(bytes.prefix(64 << 10))
        let fastWriter = try HostThread(name: "vsock-guest-fast") { _ = VsockPeers.sendAll(fast.descriptor, quick) }
        #expect(byteDifference(VsockPeers.receive(fast.descriptor, upTo: quick.count), quick) == nil)
        fastWriter.join()
        let buffered = vsock.bufferedTowardsHost[slow.hostPort] ?? 0
        #expect(buffered > 0 && buffered <= 64 << 10, "\(buffered) bytes held for the reader that stopped")
        #expect(byteDifference(VsockPeers.receive(slow.descriptor, upTo: stalled.count), stalled) == nil)
        slowWriter.join()

        // Pause during two-way traffic: nothing spins while the guest is stopped (the host
        // writer blocks once the guest's credit is used, the device's sockets sleep): the
        // machine's event loop thread uses no CPU to speak of and the vCPU makes no exit; the
        // stream goes on whole afterwards.
        let more = Self.randomBytes(1 << 20)
        let received = Locked<[UInt8]>([])
        let reader = try HostThread(name: "vsock-guest-read") { received.withLock { $0 = VsockPeers.receive(client, upTo: more.count) } }
        let sender = try HostThread(name: "vsock-guest-send") { _ = VsockPeers.sendAll(client, more) }
        usleep(20_000)
        #expect(machine.pause())
        usleep(100_000)  // Whatever was in flight settles.
        let loopBefore = try Self.threadCPUSeconds(named: "vsockguest-io")
        let exitsBefore = machine.statistics().values.reduce(0) { $0 + $1.exits }
        usleep(500_000)
        let loopPaused = try Self.threadCPUSeconds(named: "vsockguest-io") - loopBefore
        let exitsPaused = machine.statistics().values.reduce(0) { $0 + $1.exits } - exitsBefore
        machine.resume()
        print("virtio-vsock with a tiny guest: \(buffered) bytes held for a reader that stopped; paused for 0.5 s during two-way traffic: event loop \(Int(loopPaused * 1e3)) ms of CPU, \(exitsPaused) vCPU exits")
        sender.join()
        reader.join()
        #expect(loopPaused < 0.05, "the event loop used \(loopPaused) s of CPU in 0.5 s while the guest was paused")
        #expect(exitsPaused == 0)
        #expect(byteDifference(received.withLock { $0 }, more) == nil)

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

    /// `count` random bytes, eight at a time (a call per byte is slow under the sanitizers).
    static func randomBytes(_ count: Int) -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { raw in
            for offset in stride(from: 0, to: count - count % 8, by: 8) {
                raw.storeBytes(of: generator.next() as UInt64, toByteOffset: offset, as: UInt64.self)
            }
            for offset in (count - count % 8)..<count { raw[offset] = UInt8.random(in: 0...255, using: &generator) }
        }
        return bytes
    }

    /// A client of the device's socket connected to the guest's port 52, and its host port.
    static func connect52(_ path: String) throws -> (descriptor: FileDescriptor, hostPort: UInt32) {
        let client = try UnixSocket.connect(to: path, nonBlocking: false)
        VsockPeers.makeBlocking(client)
        _ = VsockPeers.sendAll(client, Array("CONNECT 52\n".utf8))
        let ok = String(decoding: line(client), as: UTF8.self)
        guard ok.hasPrefix("OK "), let port = UInt32(ok.dropFirst(3)) else {
            close(client.rawValue)
            throw VsockConnectError.refused
        }
        return (client, port)
    }

    /// The CPU time (user and system) of this process's thread named `name`, in seconds, from
    /// /proc/self/task/*/stat (clock ticks).
    static func threadCPUSeconds(named name: String) throws -> Double {
        let tasks = try #require(opendir("/proc/self/task"))
        defer { closedir(tasks) }
        while let entry = readdir(tasks) {
            let tid = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard tid.first?.isNumber == true,
                  let comm = try? HostFile.readAll(FilePath("/proc/self/task/\(tid)/comm")),
                  String(decoding: comm.filter { $0 != UInt8(ascii: "\n") }, as: UTF8.self) == name,
                  let stat = try? HostFile.readAll(FilePath("/proc/self/task/\(tid)/stat")) else { continue }
            // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
            let text = String(decoding: stat, as: UTF8.self)
            guard let close = text.lastIndex(of: ")") else { continue }
            let fields = text[text.index(after: close)...].split(separator: " ")
            guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { continue }
            return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
        }
        Issue.record("no thread named \(name)")
        return 0
    }

    /// The bytes up to a newline (without it), or what came before the socket closed.
    static func line(_ descriptor: FileDescriptor) -> [UInt8] {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while line.count < 64, read(descriptor.rawValue, &byte, 1) == 1, byte != UInt8(ascii: "\n") { line.append(byte) }
        return line
    }
}

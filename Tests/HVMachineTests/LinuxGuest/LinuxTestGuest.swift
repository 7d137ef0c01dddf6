import Glibc
import HVDevicesTesting
import HVMachine
import Testing

/// HVKit's Linux test guest (Guests/linux): the kernel and initramfs `make artifacts` builds,
/// booted on a ``Machine`` with the checks of `hvkit-test` named on its command line.
enum LinuxTestGuest {
    static let directory = (getenv("HVKIT_ARTIFACTS").map { String(cString: $0) } ?? "/var/tmp/hvkit-artifacts") + "/linux"
    static let vmlinux = directory + "/vmlinux"
    static let bzImage = directory + "/bzImage"
    static let initramfs = directory + "/initramfs.cpio"

    /// Why the guest cannot boot here, or nil.
    static let unavailableReason: String? = {
        if let reason = kvmUnavailableReason { return "needs /dev/kvm: \(reason)" }
        for path in [vmlinux, bzImage, initramfs] where access(path, R_OK) != 0 {
            return "needs the Linux test guest's artifacts (\(path) is missing): run `make artifacts`"
        }
        return nil
    }()

    /// The command line for this host: the console, an i8042 reset at the end, what an
    /// emulating host needs (BootSource.emulatedHostParameters), and the checks to run.
    static func commandLine(tests: [String], extra: [String] = []) -> String {
        (["console=ttyS0", "reboot=k", "panic=-1"] + BootSource.emulatedHostParameters + extra
            + ["hvkit.tests=" + tests.joined(separator: ",")]).joined(separator: " ")
    }
}

/// One check's line: `HVKIT-TEST NAME ok|fail key=value ...`.
struct GuestCheck: Sendable {
    let passed: Bool
    let fields: [String: String]
    let line: String

    subscript(key: String) -> String? { fields[key] }
}

/// What a boot of the test guest printed, and how the machine ended.
struct GuestRun: Sendable {
    let serial: String
    let result: MachineResult
    let watchdogFired: Bool

    /// The checks the guest reported, by name.
    var checks: [String: GuestCheck] {
        var checks: [String: GuestCheck] = [:]
        // "\r\n" is one Character in Swift: split on any newline.
        for line in serial.split(whereSeparator: \.isNewline) {
            let text = String(line)
            // Kernel messages may share the line's start; the check starts at its tag.
            let tagged = text.split(separator: " ", omittingEmptySubsequences: false).drop { $0 != "HVKIT-TEST" }
            guard !tagged.isEmpty else { continue }
            let words = tagged.dropFirst().map(String.init)
            guard words.count >= 2 else { continue }
            var fields: [String: String] = [:]
            for word in words.dropFirst(2) {
                let pair = word.split(separator: "=", maxSplits: 1).map(String.init)
                fields[pair[0]] = pair.count > 1 ? pair[1] : ""
            }
            checks[words[0]] = GuestCheck(passed: words[1] == "ok", fields: fields, line: String(text))
        }
        return checks
    }

    var finished: Bool { serial.contains("HVKIT-DONE") }

    /// The serial output's last lines, for a failure's message.
    var tail: String { serial.split(whereSeparator: \.isNewline).suffix(25).joined(separator: "\n") }
}


extension Machine {
    /// Boots `source` and waits for the guest to end (it resets through the i8042 after its
    /// last check) or for the watchdog.
    func runTestGuest(_ source: BootSource, serial: CollectingSink, seconds: Int = 400) throws -> GuestRun {
        try load(source)
        let watchdog = Watchdog(self, seconds: seconds)
        try start()
        let result = wait()
        watchdog.cancel()
        return GuestRun(serial: serial.text, result: result, watchdogFired: watchdog.didFire)
    }
}

/// The byte at offset `index` of hvkit-test's pattern `seed` (tests/hvkit-test.c, pattern()).
func guestPattern(seed: UInt32, count: Int) -> [UInt8] {
    (0..<count).map { index in
        var x = UInt32(truncatingIfNeeded: index) &* 2_654_435_761 ^ (seed &* 0x9E37_79B9)
        x ^= x >> 15
        return UInt8(truncatingIfNeeded: x ^ (x >> 7))
    }
}

/// The host's end of the net check's TCP transfer: listens on an ephemeral port of `address`,
/// accepts one connection, sends `bytes` of hvkit-test's pattern 5, reads as many back, then
/// closes. Everything waits with timeouts, so a guest that never connects cannot hang a test.
final class TransferServer: Sendable {
    struct Outcome: Sendable {
        var sentAll = false
        var received: [UInt8] = []
    }

    let port: UInt16
    private let listener: Int32
    private final class Shared: Sendable { let outcome = Locked(Outcome()) }
    private let shared = Shared()
    private let thread: HostThread

    /// Listens on `address` with a socket from `makeSocket` (socket(2)'s arguments; a tap's
    /// namespace, or this process's own).
    init(address: [UInt8], bytes: Int,
         makeSocket: (Int32, Int32, Int32) throws -> Int32 = { domain, type, proto in Glibc.socket(domain, type, proto) }) throws {
        let listener = try makeSocket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(listener >= 0)
        var bound = sockaddr_in()
        bound.sin_family = sa_family_t(AF_INET)
        bound.sin_addr.s_addr = address.withUnsafeBytes { $0.loadUnaligned(as: UInt32.self) }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, length) == 0 && listen(listener, 1) == 0 && getsockname(listener, $0, &length) == 0
            }
        }
        try #require(ok, "listen: errno \(errno)")
        self.listener = listener
        port = UInt16(bigEndian: bound.sin_port)
        let shared = self.shared
        thread = try HostThread(name: "net-transfer") {
            var waiter = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            // The guest boots for a minute or more before it connects.
            guard poll(&waiter, 1, 400_000) == 1 else { return }
            let connection = accept(listener, nil, nil)
            guard connection >= 0 else { return }
            defer { close(connection) }
            var timeout = timeval(tv_sec: 120, tv_usec: 0)
            setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(connection, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let pattern = guestPattern(seed: 5, count: bytes)
            var sent = 0
            while sent < bytes {
                let count = pattern[sent...].withUnsafeBytes { send(connection, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                guard count > 0 else { break }
                sent += count
            }
            var received = [UInt8](repeating: 0, count: bytes)
            var total = 0
            while total < bytes {
                let count = received[total...].withUnsafeMutableBytes { recv(connection, $0.baseAddress, $0.count, 0) }
                guard count > 0 else { break }
                total += count
            }
            shared.outcome.withLock { $0 = Outcome(sentAll: sent == bytes, received: Array(received.prefix(total))) }
        }
    }

    /// Waits for the transfer to end (or time out) and returns what happened.
    func wait() -> Outcome {
        thread.join()
        close(listener)
        return shared.outcome.withLock { $0 }
    }
}

/// The host's side of the vsock check, through the device's Unix socket as host programs use
/// it: a listener at `<path>_<hostPort>` for the guest's connection out (sends `bytes` of
/// pattern 7, reads as many back), and a client that writes `CONNECT <guestPort>` until the
/// guest listens (the guest refuses until then), sends `bytes` of pattern 9 and reads the echo.
/// Everything waits with timeouts.
final class VsockPeers: Sendable {
    struct Outcome: Sendable {
        var outbound: [UInt8] = []
        var sentOutbound = false
        var okLine = ""
        var connectAttempts = 0
        var echoed: [UInt8] = []
        var sentInbound = false
    }

    private final class Shared: Sendable { let outcome = Locked(Outcome()) }
    private let shared = Shared()
    private let threads: [HostThread]
    private let listener: FileDescriptor
    private let listenerPath: String

    init(socketPath: String, guestPort: UInt32, hostPort: UInt32, bytes: Int) throws {
        listenerPath = "\(socketPath)_\(hostPort)"
        let listener = try UnixSocket.listen(at: listenerPath)
        self.listener = listener
        let shared = self.shared
        let server = try HostThread(name: "vsock-out") {
            var waiter = pollfd(fd: listener.rawValue, events: Int16(POLLIN), revents: 0)
            guard poll(&waiter, 1, 400_000) == 1, let connection = try? UnixSocket.accept(listener) else { return }
            defer { close(connection.rawValue) }
            VsockPeers.makeBlocking(connection)
            let sent = VsockPeers.sendAll(connection, guestPattern(seed: 7, count: bytes))
            let received = VsockPeers.receive(connection, upTo: bytes)
            shared.outcome.withLock { $0.sentOutbound = sent; $0.outbound = received }
        }
        let client = try HostThread(name: "vsock-in") {
            let deadline = HostClock.monotonicDeadline(after: .seconds(400))
            while HostClock.monotonicNanoseconds() < deadline {
                shared.outcome.withLock { $0.connectAttempts += 1 }
                guard let connection = try? UnixSocket.connect(to: socketPath, nonBlocking: false) else {
                    usleep(500_000)
                    continue
                }
                VsockPeers.makeBlocking(connection)
                _ = VsockPeers.sendAll(connection, Array("CONNECT \(guestPort)\n".utf8))
                var line: [UInt8] = []
                var byte: UInt8 = 0
                while line.count < 32, read(connection.rawValue, &byte, 1) == 1, byte != UInt8(ascii: "\n") { line.append(byte) }
                guard line.starts(with: Array("OK ".utf8)) else {
                    // Nobody listens in the guest yet: the device closed the socket.
                    close(connection.rawValue)
                    usleep(500_000)
                    continue
                }
                shared.outcome.withLock { $0.okLine = String(decoding: line, as: UTF8.self) }
                // Send and read at once: the guest echoes as it reads, and neither side's
                // buffers hold the whole megabyte.
                let writer = try? HostThread(name: "vsock-in-send") {
                    let sent = VsockPeers.sendAll(connection, guestPattern(seed: 9, count: bytes))
                    Glibc.shutdown(connection.rawValue, Int32(SHUT_WR))
                    shared.outcome.withLock { $0.sentInbound = sent }
                }
                let echoed = VsockPeers.receive(connection, upTo: bytes)
                writer?.join()
                close(connection.rawValue)
                shared.outcome.withLock { $0.echoed = echoed }
                return
            }
        }
        threads = [server, client]
    }

    /// Waits for both sides to end (or time out).
    func wait() -> Outcome {
        for thread in threads { thread.join() }
        close(listener.rawValue)
        unlink(listenerPath)
        return shared.outcome.withLock { $0 }
    }

    static func makeBlocking(_ descriptor: FileDescriptor) {
        _ = fcntl(descriptor.rawValue, F_SETFL, fcntl(descriptor.rawValue, F_GETFL) & ~O_NONBLOCK)
        var timeout = timeval(tv_sec: 120, tv_usec: 0)
        setsockopt(descriptor.rawValue, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(descriptor.rawValue, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    static func sendAll(_ descriptor: FileDescriptor, _ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { send(descriptor.rawValue, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard count > 0 else { return false }
            sent += count
        }
        return true
    }

    static func receive(_ descriptor: FileDescriptor, upTo count: Int) -> [UInt8] {
        var received = [UInt8](repeating: 0, count: count)
        var total = 0
        while total < count {
            let got = received[total...].withUnsafeMutableBytes { recv(descriptor.rawValue, $0.baseAddress, $0.count, 0) }
            guard got > 0 else { break }
            total += got
        }
        return Array(received.prefix(total))
    }
}

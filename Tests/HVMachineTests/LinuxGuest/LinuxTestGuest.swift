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

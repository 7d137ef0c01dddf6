import Glibc
import HVDevicesTesting
import HVMachine
import Synchronization
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

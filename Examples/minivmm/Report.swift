import Glibc
import HVMachine

/// What hv-bench measures of minivmm: with HVKIT_REPORT=PATH in the environment, minivmm
/// writes to PATH the nanoseconds from HVKIT_SPAWNED_AT (the spawner's CLOCK_MONOTONIC) to
/// its first KVM_RUN (vCPU 0's, as its statistics record it, after its seccomp filter), and its resident memory outside guest RAM when the guest has ended: all of
/// it (VmRSS), and the anonymous part (RssAnon), which is what each further minivmm adds (the
/// executable's and libraries' pages are shared through the page cache).
///
/// Both files are opened before the machine starts: the thread that writes the report runs
/// under the seccomp filter by then, and a filtered thread may not open files.
struct Report {
    private let output: Int32
    private let status: Int32
    private let spawned: UInt64

    /// Opens the report and /proc/self/status when HVKIT_REPORT asks for a report.
    static func open() -> Report? {
        guard let path = getenv("HVKIT_REPORT").map({ String(cString: $0) }) else { return nil }
        let output = Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        let status = Glibc.open("/proc/self/status", O_RDONLY | O_CLOEXEC)
        guard output >= 0, status >= 0 else {
            if output >= 0 { close(output) }
            if status >= 0 { close(status) }
            return nil
        }
        let spawned = getenv("HVKIT_SPAWNED_AT").flatMap { UInt64(String(cString: $0)) } ?? 0
        return Report(output: output, status: status, spawned: spawned)
    }

    /// Writes the report and closes both files.
    func write(machine: Machine) {
        defer { close(output); close(status) }
        let first = machine.statistics()[0]?.firstEntryNanoseconds ?? 0
        let resident = residentOutsideGuest(machine.memory)
        let line = "first-run-ns=\(first > spawned && spawned > 0 ? first - spawned : 0) rss-outside-guest-kib=\(resident.all >> 10)"
            + " anon-outside-guest-kib=\(resident.anonymous >> 10)\n"
        let bytes = Array(line.utf8)
        _ = bytes.withUnsafeBytes { Glibc.write(output, $0.baseAddress, $0.count) }
    }

    /// VmRSS and RssAnon, each less the guest pages that are resident (guest RAM is
    /// anonymous memory).
    private func residentOutsideGuest(_ memory: GuestMemoryMmap) -> (all: Int, anonymous: Int) {
        let guest = Int((try? memory.residentBytes()) ?? 0)
        // procfs builds the file afresh for a read at offset 0.
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = buffer.withUnsafeMutableBytes { pread(status, $0.baseAddress, $0.count, 0) }
        var rss = 0, anonymous = 0
        for line in buffer.prefix(max(count, 0)).split(separator: UInt8(ascii: "\n")) {
            let text = String(decoding: line, as: UTF8.self)
            let kibibytes = (Int(text.drop { $0 != ":" }.filter { $0.isNumber }) ?? 0) << 10
            if text.hasPrefix("VmRSS:") { rss = kibibytes }
            if text.hasPrefix("RssAnon:") { anonymous = kibibytes }
        }
        return (max(0, rss - guest), max(0, anonymous - guest))
    }
}

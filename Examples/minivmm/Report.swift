import Glibc
import HVCore
import Synchronization

/// What hv-bench measures of minivmm: with HVKIT_REPORT=PATH in the environment, minivmm
/// writes to PATH the nanoseconds from HVKIT_SPAWNED_AT (the spawner's CLOCK_MONOTONIC) to
/// its first KVM_RUN, and its resident memory outside guest RAM when the guest has ended: all of
/// it (VmRSS), and the anonymous part (RssAnon), which is what each further minivmm adds (the
/// executable's and libraries' pages are shared through the page cache).
enum Report {
    static let firstRun = Mutex<UInt64>(0)

    static func write(memory: GuestMemoryMmap) {
        guard let path = getenv("HVKIT_REPORT").map({ String(cString: $0) }) else { return }
        let spawned = getenv("HVKIT_SPAWNED_AT").flatMap { UInt64(String(cString: $0)) } ?? 0
        let first = firstRun.withLock { $0 }
        let resident = residentOutsideGuest(memory)
        let line = "first-run-ns=\(first > spawned && spawned > 0 ? first - spawned : 0) rss-outside-guest-kib=\(resident.all >> 10)"
            + " anon-outside-guest-kib=\(resident.anonymous >> 10)\n"
        guard let file = fopen(path, "w") else { return }
        fputs(line, file)
        fclose(file)
    }

    /// VmRSS and RssAnon, each less the guest pages that are resident (guest RAM is
    /// anonymous memory).
    static func residentOutsideGuest(_ memory: GuestMemoryMmap) -> (all: Int, anonymous: Int) {
        let guest = Int((try? memory.residentBytes()) ?? 0)
        var rss = 0, anonymous = 0
        if let file = fopen("/proc/self/status", "r") {
            defer { fclose(file) }
            var line = [CChar](repeating: 0, count: 256)
            while fgets(&line, Int32(line.count), file) != nil {
                let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                let kibibytes = (Int(text.drop { $0 != ":" }.filter { $0.isNumber }) ?? 0) << 10
                if text.hasPrefix("VmRSS:") { rss = kibibytes }
                if text.hasPrefix("RssAnon:") { anonymous = kibibytes }
            }
        }
        return (max(0, rss - guest), max(0, anonymous - guest))
    }
}

import Glibc
import HVCore
import HVKVM
import SystemPackage

// The Linux boot figures. They need `make artifacts` (Debian's cloud kernel); without it they
// say so and are skipped.

let kernelArtifact: String = {
    if let path = getenv("HVKIT_KERNEL") { return String(cString: path) }
    return "/var/tmp/hvkit-artifacts/vmlinuz"
}()

func readArtifact(_ path: String) throws -> [UInt8] {
    do { return try HostFile.readAll(FilePath(path)) } catch {
        throw BenchError.unexpected("cannot read \(path) (\(error)): run `make artifacts` (or set HVKIT_KERNEL)")
    }
}

/// Host-side extraction of the bzImage's kernel (parse, decompress, check), ms, median of
/// `rounds`; the baseline is copying the same number of output bytes once (memcpy), for scale.
func bzImageExtractFigure(rounds: Int) throws -> Figure {
    let bytes = try readArtifact(kernelArtifact)
    var times: [Double] = []
    var outputSize = 0
    var compression = "?"
    for _ in 0..<rounds {
        let start = nowNanoseconds()
        let image = try BzImage(bytes: bytes)
        let kernel = try image.extractKernel()
        times.append(nowNanoseconds() - start)
        outputSize = kernel.count
        compression = image.compression?.rawValue ?? "?"
    }
    // The copy, for scale.
    let source = [UInt8](repeating: 1, count: outputSize)
    var destination = [UInt8](repeating: 0, count: outputSize)
    let copyStart = nowNanoseconds()
    destination.withUnsafeMutableBytes { to in source.withUnsafeBytes { from in to.copyMemory(from: from) } }
    let copy = nowNanoseconds() - copyStart
    withExtendedLifetime(destination) {}
    return Figure(name: "bzimage_extract", value: median(times) / 1e6, baseline: copy / 1e6, unit: "ms",
                  note: "\(bytes.count >> 20) MiB \(compression) bzImage to a \(outputSize >> 20) MiB ELF kernel, median of \(rounds); baseline: one memcpy of the output; goal ≤ 300 ms")
}

/// minivmm (built beside hv-bench) run on its built-in guest, `rounds` times: from hv-bench's
/// spawn to minivmm's first KVM_RUN (`startup_to_first_run`, ms), and minivmm's resident
/// memory outside guest RAM when the guest has ended (`minivmm_rss`, MiB). Baseline for the
/// first: spawning /bin/true and waiting for it, the floor any process start pays.
func minivmmFigures(rounds: Int) throws -> [Figure] {
    let executable = String(CommandLine.arguments[0].split(separator: "/", omittingEmptySubsequences: false).dropLast()
        .joined(separator: "/")) + "/minivmm"
    guard access(executable, X_OK) == 0 else {
        throw BenchError.unexpected("no minivmm beside hv-bench (\(executable)): `make bench` builds both")
    }
    let report = "/tmp/hv-bench-minivmm-\(getpid()).txt"
    defer { unlink(report) }
    var startups: [Double] = []
    var rss: [Double] = []
    var trueRuns: [Double] = []
    for _ in 0..<rounds {
        let spawned = UInt64(nowNanoseconds())
        let status = try spawnAndWait(executable, environment: ["HVKIT_REPORT=\(report)", "HVKIT_SPAWNED_AT=\(spawned)"])
        guard status == 0 else { throw BenchError.unexpected("minivmm exited with \(status)") }
        guard let text = try? readArtifact(report), let line = Optional(String(decoding: text, as: UTF8.self)) else {
            throw BenchError.unexpected("minivmm wrote no report")
        }
        for field in line.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
            let parts = field.split(separator: "=")
            guard parts.count == 2, let value = Double(parts[1]) else { continue }
            if parts[0] == "first-run-ns" { startups.append(value / 1e6) }
            if parts[0] == "rss-outside-guest-kib" { rss.append(value / 1024) }
        }
        let trueStart = nowNanoseconds()
        _ = try spawnAndWait("/bin/true", environment: [])
        trueRuns.append((nowNanoseconds() - trueStart) / 1e6)
    }
    return [
        Figure(name: "startup_to_first_run", value: median(startups), baseline: median(trueRuns), unit: "ms",
               note: "spawn to the first KVM_RUN of minivmm's built-in guest, median of \(rounds); baseline: spawn and wait for /bin/true; goal ≤ 10 ms"),
        Figure(name: "minivmm_rss", value: median(rss), baseline: nil, unit: "MiB",
               note: "VmRSS less resident guest pages after the built-in guest ran, median of \(rounds); goal ≤ 5 MiB"),
    ]
}

/// Runs `path` with `environment` added to hv-bench's own, its output discarded; returns its exit status.
func spawnAndWait(_ path: String, environment: [String]) throws -> Int32 {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    var inherited: [String] = []
    var index = 0
    while let entry = environ[index] {
        inherited.append(String(cString: entry))
        index += 1
    }
    let arguments: [UnsafeMutablePointer<CChar>?] = [path].map { (text: String) in strdup(text) } + [nil]
    let variables: [UnsafeMutablePointer<CChar>?] = (inherited + environment).map { (text: String) in strdup(text) } + [nil]
    defer {
        for pointer in arguments { free(pointer) }
        for pointer in variables { free(pointer) }
    }
    var pid: pid_t = 0
    let result = posix_spawn(&pid, path, &actions, nil, arguments, variables)
    guard result == 0 else { throw BenchError.unexpected("posix_spawn \(path): errno \(result)") }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    // WIFEXITED and WEXITSTATUS, which Swift does not import.
    return status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
}

import Glibc
import HVBoot
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
/// memory outside guest RAM when the guest has ended (`minivmm_rss`, MiB; its anonymous part,
/// `minivmm_private_rss`). Baseline for the
/// first: spawning /bin/true and waiting for it, the floor any process start pays.
func minivmmFigures(rounds: Int) throws -> [Figure] {
    let executable = try executableBesideBench("minivmm")
    let report = "/tmp/hv-bench-minivmm-\(getpid()).txt"
    defer { unlink(report) }
    var startups: [Double] = []
    var rss: [Double] = []
    var anonymous: [Double] = []
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
            if parts[0] == "anon-outside-guest-kib" { anonymous.append(value / 1024) }
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
        Figure(name: "minivmm_private_rss", value: median(anonymous), baseline: nil, unit: "MiB",
               note: "RssAnon less resident guest pages: what each further minivmm adds, the executable's pages being shared, median of \(rounds)"),
    ]
}

/// minivmm composed on HVMachine with a virtio-blk disk (AIO), virtio-rng, a virtio console and
/// the legacy devices, on its built-in guest: from hv-bench's spawn to its first KVM_RUN, ms,
/// median of `rounds`. Baseline: spawning hv-empty (an empty Swift program built the same way)
/// and waiting for it to exit, the floor any Swift VMM pays before its first line runs.
func composeToFirstRunFigure(rounds: Int) throws -> Figure {
    let minivmm = try executableBesideBench("minivmm")
    let empty = try executableBesideBench("hv-empty")
    let report = "/tmp/hv-bench-compose-\(getpid()).txt"
    let disk = "/var/tmp/hv-bench-compose-disk-\(getpid())"
    defer { unlink(report); unlink(disk) }
    let created = open(disk, O_CREAT | O_WRONLY | O_TRUNC, 0o600)
    guard created >= 0, ftruncate(created, 1 << 20) == 0 else { throw BenchError.unexpected("cannot make \(disk): errno \(errno)") }
    close(created)
    let command = [minivmm, "--disk", disk, "--rng", "--virtio-console", "file:/dev/null", "--console", "file:/dev/null"]
    var firstRuns: [Double] = []
    var floors: [Double] = []
    for _ in 0..<rounds {
        let spawned = UInt64(nowNanoseconds())
        let pid = try spawn(command, environment: ["HVKIT_REPORT=\(report)", "HVKIT_SPAWNED_AT=\(spawned)"], standardOutput: nil)
        guard waitForExit(pid) == 0 else { throw BenchError.unexpected("minivmm with devices did not exit cleanly") }
        let text = String(decoding: try readArtifact(report), as: UTF8.self)
        guard let field = text.split(separator: " ").first(where: { $0.hasPrefix("first-run-ns=") }),
              let nanoseconds = Double(field.dropFirst("first-run-ns=".count)) else {
            throw BenchError.unexpected("minivmm wrote no first-run time")
        }
        firstRuns.append(nanoseconds / 1e6)
        let start = nowNanoseconds()
        guard try spawnAndWait(empty, environment: []) == 0 else { throw BenchError.unexpected("hv-empty failed") }
        floors.append((nowNanoseconds() - start) / 1e6)
    }
    return Figure(name: "compose_to_first_run", value: median(firstRuns), baseline: median(floors), unit: "ms",
                  note: "spawn to the first KVM_RUN of minivmm on HVMachine with a disk, rng, a virtio console and the legacy devices, median of \(rounds); baseline: spawn to exit of an empty static Swift program; goal ≤ 10 ms and at most 4 ms above the floor")
}

/// Time from spawn to the kernel banner ("Linux version") on the serial console: minivmm
/// against QEMU's microvm machine, in alternating rounds, with the same uncompressed vmlinux
/// (extracted from the artifact's bzImage into a scratch file), command line, RAM and one
/// vCPU. Both enter it through its PVH note. ms, the median of `rounds` each.
func bannerVersusQEMUFigure(rounds: Int) throws -> Figure {
    let qemu = "/usr/bin/qemu-system-x86_64"
    guard access(qemu, X_OK) == 0 else {
        throw BenchError.unexpected("needs \(qemu): apt-get install qemu-system-x86 (`make bench` does)")
    }
    let minivmm = try executableBesideBench("minivmm")
    guard case let .elf(vmlinux) = try LinuxKernel(extracting: BzImage(bytes: readArtifact(kernelArtifact))) else {
        throw BenchError.unexpected("the extracted kernel is not an ELF")
    }
    let path = "/tmp/hv-bench-vmlinux-\(getpid())"
    defer { unlink(path) }
    do {
        let file = try FileDescriptor.open(FilePath(path), .writeOnly, options: [.create, .truncate], permissions: [.ownerReadWrite])
        defer { try? file.close() }
        _ = try file.writeAll(vmlinux.bytes)
    } catch {
        throw BenchError.unexpected("cannot write \(path): \(error)")
    }
    let commandLine = "console=ttyS0 earlyprintk=serial,ttyS0"
    let ours = [minivmm, "--kernel", path, "--cmdline", commandLine, "--memory", "256", "--cpus", "1"]
    let theirs = [qemu, "-M", "microvm", "-accel", "kvm", "-cpu", "qemu64,-cx16", "-m", "256", "-smp", "1",
                  "-nodefaults", "-no-user-config", "-nographic", "-serial", "stdio", "-kernel", path, "-append", commandLine]
    let (oursNs, theirsNs) = try alternatingTimesToOutput(ours, theirs, marker: "Linux version", rounds: rounds, limit: 300)
    return Figure(name: "banner_vs_qemu", value: oursNs / 1e6, baseline: theirsNs / 1e6, unit: "ms",
                  note: "spawn to \"Linux version\" on the serial port, Debian's vmlinux by PVH, 256 MiB, 1 vCPU, median of \(rounds) alternating; baseline: qemu-system-x86_64 -M microvm -cpu qemu64,-cx16; goal ratio ≤ 1.0")
}

/// Runs `ours` and `theirs` alternately, `rounds` times each, each until `marker` appears on its
/// output, so that both see the machine's load alike; the median nanoseconds of each.
func alternatingTimesToOutput(_ ours: [String], _ theirs: [String], marker: String, rounds: Int,
                              limit: Double) throws -> (ours: Double, theirs: Double) {
    var oursNs: [Double] = []
    var theirsNs: [Double] = []
    for _ in 0..<rounds {
        oursNs.append(try timeToOutput(ours, marker: marker, limit: limit))
        theirsNs.append(try timeToOutput(theirs, marker: marker, limit: limit))
    }
    return (median(oursNs), median(theirsNs))
}

/// The executable `name` in hv-bench's own directory (`make bench` builds them together).
func executableBesideBench(_ name: String) throws -> String {
    let executable = String(CommandLine.arguments[0].split(separator: "/", omittingEmptySubsequences: false).dropLast()
        .joined(separator: "/")) + "/" + name
    guard access(executable, X_OK) == 0 else {
        throw BenchError.unexpected("no \(name) beside hv-bench (\(executable)): `make bench` builds both")
    }
    return executable
}

/// Nanoseconds from spawning `command` until `marker` appears in its standard output; then the
/// process is killed. Throws if it exits first or `limit` seconds pass.
func timeToOutput(_ command: [String], marker: String, limit: Double) throws -> Double {
    try timesToOutputs(command, markers: [marker], limit: limit)[0]
}

/// Nanoseconds from spawning `command` until each of `markers` appears in its standard output,
/// in order; then the process is killed. Throws if it exits first or `limit` seconds pass.
func timesToOutputs(_ command: [String], markers: [String], limit: Double) throws -> [Double] {
    var pipeEnds: [Int32] = [0, 0]
    guard pipe(&pipeEnds) == 0 else { throw BenchError.unexpected("pipe: errno \(errno)") }
    // Neither end leaks into the child beyond its standard output (dup2 clears the flag there).
    for end in pipeEnds { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
    defer { close(pipeEnds[0]) }
    let start = nowNanoseconds()
    let pid = try spawn(command, environment: [], standardOutput: pipeEnds[1])
    close(pipeEnds[1])
    defer {
        kill(pid, SIGKILL)
        _ = waitForExit(pid)
    }
    var times: [Double] = []
    var output: [UInt8] = []
    var searchFrom = 0
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let marker = markers[times.count]
        let remaining = limit * 1e9 - (nowNanoseconds() - start)
        guard remaining > 0 else { throw BenchError.unexpected("\(command[0]): no \"\(marker)\" after \(Int(limit)) s") }
        var descriptor = pollfd(fd: pipeEnds[0], events: Int16(POLLIN), revents: 0)
        guard poll(&descriptor, 1, Int32(min(remaining / 1e6, 1000))) >= 0 || errno == EINTR else {
            throw BenchError.unexpected("poll: errno \(errno)")
        }
        let count = read(pipeEnds[0], &buffer, buffer.count)
        if count == 0 { throw BenchError.unexpected("\(command[0]) exited before \"\(marker)\"") }
        guard count > 0 else { continue }
        output.append(contentsOf: buffer[0..<count])
        let now = nowNanoseconds() - start
        // Each marker is searched after the previous one; several may arrive in one read.
        while times.count < markers.count {
            let wanted = Array(markers[times.count].utf8)
            let from = max(searchFrom, output.count - count - wanted.count)
            guard let found = output[from...].firstRange(of: wanted) else { break }
            times.append(now)
            searchFrom = found.upperBound
        }
        if times.count == markers.count { return times }
    }
}

/// Runs `path` with `environment` added to hv-bench's own, its output discarded; returns its exit status.
func spawnAndWait(_ path: String, environment: [String]) throws -> Int32 {
    waitForExit(try spawn([path], environment: environment, standardOutput: nil))
}

/// Starts `command` (its path, then its arguments) with `environment` added to hv-bench's
/// own, standard output to `standardOutput` (nil: /dev/null) and standard error to /dev/null.
func spawn(_ command: [String], environment: [String], standardOutput: Int32?) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if let standardOutput {
        posix_spawn_file_actions_adddup2(&actions, standardOutput, 1)
    } else {
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    }
    posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
    var inherited: [String] = []
    var index = 0
    while let entry = environ[index] {
        inherited.append(String(cString: entry))
        index += 1
    }
    let arguments: [UnsafeMutablePointer<CChar>?] = command.map { (text: String) in strdup(text) } + [nil]
    let variables: [UnsafeMutablePointer<CChar>?] = (inherited + environment).map { (text: String) in strdup(text) } + [nil]
    defer {
        for pointer in arguments { free(pointer) }
        for pointer in variables { free(pointer) }
    }
    var pid: pid_t = 0
    let result = posix_spawn(&pid, command[0], &actions, nil, arguments, variables)
    guard result == 0 else { throw BenchError.unexpected("posix_spawn \(command[0]): errno \(result)") }
    return pid
}

/// Waits for `pid`; its exit status, or 128 plus the signal that ended it.
func waitForExit(_ pid: pid_t) -> Int32 {
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    // WIFEXITED and WEXITSTATUS, which Swift does not import.
    return status & 0x7F == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
}

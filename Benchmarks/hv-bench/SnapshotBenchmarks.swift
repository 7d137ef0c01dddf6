import CBenchBaseline
import Glibc
import GuestImages
import HVMachine
import SystemPackage

// The snapshot figures (issue: snapshot and restore). Each machine is composed as minivmm
// composes `--disk D --virtio-console file:/dev/null` (the legacy set, one disk, a virtio
// console) and runs Guests/tender/timer_ticks.c, so minivmm can restore what hv-bench saved.

/// Where snapshots and the scratch disk go: a real file system, not tmpfs.
let snapshotScratch = "/var/tmp/hv-bench-snapshot-\(getpid())"

/// A running machine to save.
final class SnapshotSubject {
    let machine: Machine
    let disk: String
    private let output: FileDescriptor

    init(memory: UInt64, name: String, tracking: Bool = false) throws {
        disk = snapshotScratch + "-\(name).disk"
        let created = open(disk, O_CREAT | O_WRONLY | O_TRUNC, 0o600)
        guard created >= 0, ftruncate(created, 1 << 20) == 0 else { throw BenchError.unexpected("cannot make \(disk): errno \(errno)") }
        close(created)
        output = try FileDescriptor.open("/dev/null", .writeOnly)
        var configuration = MachineConfiguration(memorySize: memory)
        configuration.dirtyPageTracking = tracking
        machine = try Machine(configuration)
        try machine.addLegacyDevices(console: FileDescriptorSink(output))
        try machine.addDisk(path: disk)
        try machine.addConsole(output: FileDescriptorSink(output))
        try machine.load(.unikernel(image: GuestImages.timerTicks, hypercalls: try .essentials(console: FileDescriptorSink(output)),
                                    argument: 8 << 20))
        try machine.start()
    }

    /// Fills RAM from 16 MiB to its end with a pattern, so that every page there is saved.
    func fillMemory() throws {
        let chunk = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 7) | 1 }
        var address: UInt64 = 16 << 20
        while address < machine.configuration.memorySize {
            try machine.memory.write(chunk, to: GuestAddress(address))
            address += 1 << 20
        }
    }

    func finish() {
        machine.stop()
        _ = machine.wait()
        try? output.close()
        unlink(disk)
    }
}

/// The baseline of the snapshot figures: a plain C loop writing `bytes` bytes to `path` and
/// syncing them, ms.
func cWriteLoop(bytes: UInt64, to path: String) throws -> Double {
    let buffer = [UInt8](repeating: 0xA5, count: Int(bytes))
    let nanoseconds = buffer.withUnsafeBufferPointer { hvb_c_write_file(path, $0.baseAddress, $0.count) }
    guard nanoseconds >= 0 else { throw BenchError.baseline("write loop", nanoseconds) }
    return nanoseconds / 1e6
}

func removeSnapshot(_ directory: String) {
    for file in [MachineSnapshot.stateFileName, MachineSnapshot.memoryFileName] { unlink(directory + "/" + file) }
    rmdir(directory)
}

/// Saving a running 128 MiB machine whose RAM is nearly all data, ms, median of `rounds`;
/// baseline: a plain C loop writing the same number of bytes to a file and syncing it.
func snapshotFullFigure(rounds: Int) throws -> Figure {
    let subject = try SnapshotSubject(memory: 128 << 20, name: "full")
    defer { subject.finish() }
    try subject.fillMemory()
    let directory = snapshotScratch + "-full"
    let copy = snapshotScratch + "-full.c"
    defer {
        removeSnapshot(directory)
        unlink(copy)
    }
    var times: [Double] = [], baselines: [Double] = [], paused: [Double] = []
    var written: UInt64 = 0
    for _ in 0..<rounds {
        let start = nowNanoseconds()
        let report = try subject.machine.snapshot(to: directory)
        times.append((nowNanoseconds() - start) / 1e6)
        paused.append(Double(report.pausedNanoseconds) / 1e6)
        written = report.memoryBytesWritten
        baselines.append(try cWriteLoop(bytes: written, to: copy))
    }
    return Figure(name: "snapshot_full_128m", value: median(times), baseline: median(baselines), unit: "ms",
                  note: "a running 128 MiB machine saved (\(written >> 20) MiB of RAM written, fsync'ed, vCPUs paused \(format(median(paused))) ms), median of \(rounds); baseline: one C write loop of the same bytes and fsync; goal ≤ 1.2×")
}

/// A diff snapshot of a running 128 MiB machine after 16 MiB of its RAM changed (every
/// fourth page of 64 MiB, written by the VMM as devices write), ms, median of `rounds`;
/// baseline: a plain C loop writing the same number of bytes and syncing them.
func snapshotDiffFigure(rounds: Int) throws -> Figure {
    let subject = try SnapshotSubject(memory: 128 << 20, name: "diff", tracking: true)
    defer { subject.finish() }
    try subject.fillMemory()
    let base = snapshotScratch + "-diff-base", diff = snapshotScratch + "-diff"
    let copy = snapshotScratch + "-diff.c"
    defer {
        removeSnapshot(base)
        removeSnapshot(diff)
        unlink(copy)
    }
    try subject.machine.snapshot(to: base)
    var times: [Double] = [], baselines: [Double] = []
    var written: UInt64 = 0
    let page = [UInt8](repeating: 0x3C, count: 4096)
    for round in 0..<rounds {
        var address: UInt64 = 16 << 20
        while address < 80 << 20 {
            try subject.machine.memory.write(page.map { $0 &+ UInt8(truncatingIfNeeded: round) }, to: GuestAddress(address))
            address += 4 * 4096
        }
        let start = nowNanoseconds()
        let report = try subject.machine.snapshot(to: diff, kind: .diff)
        times.append((nowNanoseconds() - start) / 1e6)
        written = report.memoryBytesWritten
        baselines.append(try cWriteLoop(bytes: written, to: copy))
    }
    return Figure(name: "snapshot_diff", value: median(times), baseline: median(baselines), unit: "ms",
                  note: "a diff snapshot of a running 128 MiB machine after 16 MiB changed in scattered pages (\(written >> 20) MiB written, fsync'ed), median of \(rounds); baseline: one C write loop of the same bytes and fsync; goal ≤ 1.2×")
}

/// minivmm restoring a saved 128 MiB machine (`--restore`), from spawn to its first KVM_RUN,
/// ms, median of `rounds`; baseline: the same minivmm booting the same machine afresh. With
/// the 1 GiB figure: the same restore of a 1 GiB machine, against the 128 MiB restore.
func restoreFigures(rounds: Int) throws -> [Figure] {
    let minivmm = try executableBesideBench("minivmm")
    var restores: [UInt64: [Double]] = [:]
    var boots: [Double] = []
    for memory: UInt64 in [128 << 20, 1 << 30] {
        let subject = try SnapshotSubject(memory: memory, name: "restore-\(memory >> 20)")
        defer { subject.finish() }
        try subject.fillMemory()
        let directory = snapshotScratch + "-restore-\(memory >> 20)"
        defer { removeSnapshot(directory) }
        try subject.machine.snapshot(to: directory, leavePaused: true)
        let devices = ["--disk", subject.disk, "--virtio-console", "file:/dev/null", "--console", "file:/dev/null"]
        for _ in 0..<rounds {
            restores[memory, default: []].append(try firstRun(of: [minivmm, "--restore", directory] + devices, stopAfter: 0.3))
            if memory == 128 << 20 {
                boots.append(try firstRun(of: [minivmm, "--memory", "128"] + devices, stopAfter: nil))
            }
        }
    }
    let small = median(restores[128 << 20] ?? []), large = median(restores[1 << 30] ?? [])
    return [
        Figure(name: "restore_to_first_run", value: small, baseline: median(boots), unit: "ms",
               note: "spawn to the first KVM_RUN of minivmm --restore of a 128 MiB machine with a disk and a virtio console, median of \(rounds); baseline: the same minivmm booting that machine afresh; goal ≤ 5 ms"),
        Figure(name: "restore_1g_to_first_run", value: large, baseline: small, unit: "ms",
               note: "the same restore of a 1 GiB machine whose RAM is nearly all data, median of \(rounds); baseline: the 128 MiB restore; goal ≤ 1.5× (memory is mapped, not read)"),
    ]
}

/// Runs `command` with a report, stops it with SIGTERM after `stopAfter` seconds (nil: waits
/// for it to end), and returns the ms from its spawn to its first KVM_RUN.
private func firstRun(of command: [String], stopAfter: Double?) throws -> Double {
    let report = snapshotScratch + "-report.txt"
    defer { unlink(report) }
    let spawned = UInt64(nowNanoseconds())
    let pid = try spawn(command, environment: ["HVKIT_REPORT=\(report)", "HVKIT_SPAWNED_AT=\(spawned)"], standardOutput: nil)
    if let stopAfter {
        usleep(UInt32(stopAfter * 1e6))
        kill(pid, SIGTERM)
    }
    let status = waitForExit(pid)
    let text = String(decoding: (try? readArtifact(report)) ?? [], as: UTF8.self)
    guard let field = text.split(separator: " ").first(where: { $0.hasPrefix("first-run-ns=") }),
          let nanoseconds = Double(field.dropFirst("first-run-ns=".count)), nanoseconds > 0 else {
        throw BenchError.unexpected("\(command.joined(separator: " ")) exited with \(status) and reported no first run")
    }
    return nanoseconds / 1e6
}

/// Proportional set size (PSS, KiB) of this process: shared pages count once across their
/// mappings, so clones of one snapshot are charged once for the pages they share.
private func proportionalSetKiB() -> Double {
    guard let bytes = try? HostFile.readAll(FilePath("/proc/self/smaps_rollup")) else { return 0 }
    for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") where line.hasPrefix("Pss:") {
        return Double(line.filter(\.isNumber)) ?? 0
    }
    return 0
}

/// Ten clones of one saved 128 MiB machine (nearly all of its RAM data) running side by side
/// for a moment, each touching little memory: what they add to this process's PSS, MiB;
/// baseline: ten machines booted afresh the same way.
func cloneRSSFigure() throws -> Figure {
    let subject = try SnapshotSubject(memory: 128 << 20, name: "clones")
    try subject.fillMemory()
    let directory = snapshotScratch + "-clones"
    defer { removeSnapshot(directory) }
    try subject.machine.snapshot(to: directory, leavePaused: true)
    subject.finish()
    let output = try FileDescriptor.open("/dev/null", .writeOnly)
    defer { try? output.close() }

    func measure(_ make: () throws -> Machine) throws -> Double {
        let before = proportionalSetKiB()
        var machines: [Machine] = []
        for _ in 0..<10 { machines.append(try make()) }
        for machine in machines { try machine.start() }
        usleep(300_000)
        let after = proportionalSetKiB()
        for machine in machines {
            machine.stop()
            _ = machine.wait()
        }
        return (after - before) / 1024
    }
    let snapshot = try MachineSnapshot(directory: directory)
    let disk = snapshotScratch + "-clones.disk"
    let created = open(disk, O_CREAT | O_WRONLY | O_TRUNC, 0o600)
    guard created >= 0, ftruncate(created, 1 << 20) == 0 else { throw BenchError.unexpected("cannot make \(disk)") }
    close(created)
    defer { unlink(disk) }
    let clones = try measure {
        let clone = try Machine(restoring: snapshot)
        try clone.addLegacyDevices(console: FileDescriptorSink(output))
        try clone.addDisk(path: disk)
        try clone.addConsole(output: FileDescriptorSink(output))
        try clone.restore(hypercalls: try .essentials(console: FileDescriptorSink(output)))
        return clone
    }
    let fresh = try measure {
        let machine = try Machine(MachineConfiguration(memorySize: 128 << 20))
        try machine.addLegacyDevices(console: FileDescriptorSink(output))
        try machine.addDisk(path: disk)
        try machine.addConsole(output: FileDescriptorSink(output))
        try machine.load(.unikernel(image: GuestImages.timerTicks, hypercalls: try .essentials(console: FileDescriptorSink(output)),
                                    argument: 8 << 20))
        return machine
    }
    return Figure(name: "clone_rss", value: clones, baseline: fresh, unit: "MiB",
                  note: "what 10 running clones of one saved 128 MiB machine add to the process's PSS; baseline: 10 machines booted afresh")
}

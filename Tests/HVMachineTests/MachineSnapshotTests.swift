import Glibc
import SystemPackage
import GuestImages
import HVDevicesTesting
import HVMachine
import HVTestSupport
import Testing

/// Snapshot and restore of whole machines on real KVM, with Guests/tender/timer_ticks.c: a
/// guest that counts the PIT's interrupts through the in-kernel PIC next to a random nonce.
@Suite("Machine snapshots", .serialized, .requiresKVM)
struct MachineSnapshotTests {
    /// Where the guest keeps its record: magic, nonce, ticks.
    static let record = GuestAddress(8 << 20)
    static let magic: UInt64 = 0x53_4B43_4954  // "TICKS"

    static func services(_ console: CollectingSink) throws -> HypercallTable {
        var table = HypercallTable()
        try table.install(ConsoleService(output: console))
        try table.install(RandomService())
        return table
    }

    static func directory(_ name: String) -> String {
        "/tmp/hvkit-snapshot-\(name)-\(getpid())"
    }

    static func removeSnapshot(_ directory: String) {
        for file in [MachineSnapshot.stateFileName, MachineSnapshot.memoryFileName] { unlink(directory + "/" + file) }
        rmdir(directory)
    }

    /// A 16 MiB machine (or `configuration`'s) with the legacy devices, running the ticking guest.
    static func ticker(_ configuration: MachineConfiguration = MachineConfiguration(memorySize: 16 << 20),
                       console: CollectingSink = CollectingSink()) throws -> RunningGuest {
        let machine = try Machine(configuration)
        try machine.addLegacyDevices(console: CollectingSink())
        try machine.load(.unikernel(image: GuestImages.timerTicks, hypercalls: try services(console), argument: record.rawValue))
        return try RunningGuest(machine)
    }

    static func ticks(_ machine: Machine) throws -> UInt64 {
        try machine.memory.read(UInt64.self, at: GuestAddress(record.rawValue + 16))
    }

    /// A ticking guest, saved after some ticks and restored into a new machine, goes on from
    /// where it was: the same nonce (no reboot), at least as many ticks, and more coming (the
    /// PIT, the PICs, the vCPU's halt and its interrupt flag all came back). Also with the
    /// state file rewritten in format 1.0, the first snapshots': the migration step restores it.
    @Test(arguments: ["current", "1.0"])
    func aTickingGuestGoesOnAfterRestore(stateFormat: String) throws {
        let directory = Self.directory("ticks-\(stateFormat)")
        defer { Self.removeSnapshot(directory) }
        let console = CollectingSink()
        let running = try Self.ticker(console: console)
        defer { running.finish() }
        let original = running.machine
        try #require(waitUntil(seconds: 120) { try Self.ticks(original) >= 5 }, "the guest did not tick: \(console.text)")
        #expect(try original.memory.read(UInt64.self, at: Self.record) == Self.magic)
        let nonce = try original.memory.read(UInt64.self, at: GuestAddress(Self.record.rawValue + 8))

        let report = try original.snapshot(to: directory, leavePaused: true)
        let savedTicks = try Self.ticks(original)
        #expect(report.memorySize == 16 << 20)
        #expect(report.memoryBytesWritten > 0 && report.memoryBytesWritten < report.memorySize, "\(report)")
        original.stop()
        _ = original.wait()
        if stateFormat == "1.0" {
            let statePath = directory + "/" + MachineSnapshot.stateFileName
            let current = try SnapshotArchive(decoding: HostFile.readAll(FilePath(statePath)))
            try MachineSnapshotRefusalTests.replace(statePath, with: current.encodedVersion1())
        }

        let snapshot = try MachineSnapshot(directory: directory)
        #expect(snapshot.archive.version.major == (stateFormat == "1.0" ? 1 : SnapshotArchive.currentVersion.major))
        #expect(snapshot.machine.devices == ["16550 serial", "i8042", "CMOS clock"])
        let restored = try Machine(restoring: snapshot)
        try restored.addLegacyDevices(console: CollectingSink())
        // The guest's memory is the snapshot's, before anything runs.
        #expect(try restored.memory.read(UInt64.self, at: GuestAddress(Self.record.rawValue + 8)) == nonce)
        try restored.restore(hypercalls: try Self.services(console))
        let restoredRun = try RunningGuest(restored)
        defer { restoredRun.finish() }
        #expect(try Self.ticks(restored) >= savedTicks)
        #expect(waitUntil(seconds: 120) { (try? Self.ticks(restored)) ?? 0 >= savedTicks + 5 }, "no ticks after the restore: \((try? Self.ticks(restored)) ?? 0) (saved \(savedTicks))")
        #expect(try restored.memory.read(UInt64.self, at: GuestAddress(Self.record.rawValue + 8)) == nonce)
        #expect(console.text == "ticking\n", "the guest started again: \(console.text)")
    }
}

/// A guest in the middle of a sequence of virtio-blk requests (Guests/tender/block_sequence.c),
/// saved and restored into a new machine on the same disk: the sequence completes there and
/// the disk holds what it wrote.
@Suite("Machine snapshots with a disk", .serialized, .requiresKVM)
struct MachineSnapshotDiskTests {
    static let record = GuestAddress(8 << 20)
    static let sectors = 48
    static let requests: UInt64 = 48 + 1 + 48

    static func completed(_ machine: Machine) throws -> UInt64 {
        try machine.memory.read(UInt64.self, at: GuestAddress(record.rawValue + 8))
    }

    static func result(_ machine: Machine) throws -> UInt64 {
        try machine.memory.read(UInt64.self, at: GuestAddress(record.rawValue + 16))
    }

    @Test func aBlockSequenceCompletesAfterRestore() throws {
        let directory = MachineSnapshotTests.directory("disk")
        defer { MachineSnapshotTests.removeSnapshot(directory) }
        let disk = try ScratchFile(size: 1 << 20)
        let console = CollectingSink()
        let original = try Machine(MachineConfiguration(memorySize: 16 << 20))
        try original.addLegacyDevices(console: CollectingSink())
        let slot = try original.addDisk(path: disk.path, name: "disk0").slot
        let argument = (slot.window.start.rawValue >> 12) << 32 | Self.record.rawValue >> 12
        try original.load(.unikernel(image: GuestImages.blockSequence, hypercalls: try MachineSnapshotTests.services(console), argument: argument))
        let running = try RunningGuest(original)
        defer { running.finish() }
        try #require(waitUntil(seconds: 120) { try Self.completed(original) >= 20 }, "the sequence did not start: \(console.text)")
        try original.snapshot(to: directory, leavePaused: true)
        let saved = try Self.completed(original)
        #expect(saved < Self.requests, "the sequence was over before the snapshot")
        original.stop()
        _ = original.wait()

        let restored = try Machine(restoring: try MachineSnapshot(directory: directory))
        try restored.addLegacyDevices(console: CollectingSink())
        try restored.addDisk(path: disk.path, name: "disk0")
        try restored.restore(hypercalls: try MachineSnapshotTests.services(console))
        let restoredRun = try RunningGuest(restored)
        defer { restoredRun.finish() }
        #expect(waitUntil(seconds: 120) { ((try? Self.result(restored)) ?? 0) != 0 }, "the sequence did not complete: \(console.text)")
        #expect(try Self.result(restored) == 1, "\(console.text)")
        #expect(try Self.completed(restored) == Self.requests)
        // The guest records its result, then says it on the console: the line may come a moment later.
        #expect(waitUntil(seconds: 60) { console.text.hasSuffix("block sequence: every sector right\n") }, "\(console.text)")
        restored.stop()
        _ = restored.wait()
        let bytes = try HostFile.readAll(FilePath(disk.path))
        for number in 0..<Self.sectors {
            let expected = (0..<512).map { UInt8(truncatingIfNeeded: (number * 31 + $0) ^ 0x5A) }
            #expect(Array(bytes[(number * 512)..<((number + 1) * 512)]) == expected, "sector \(number)")
        }
    }
}

/// What a snapshot refuses, and what a restore refuses, each with its reason.
@Suite("Machine snapshot refusals", .serialized, .requiresKVM)
struct MachineSnapshotRefusalTests {
    /// A running ticking machine and its snapshot in `directory`.
    static func snapshotOfATicker(_ directory: String) throws {
        let running = try MachineSnapshotTests.ticker()
        defer { running.finish() }
        _ = try waitUntil(seconds: 60) { try MachineSnapshotTests.ticks(running.machine) >= 1 }
        try running.machine.snapshot(to: directory)
    }

    @Test func aMachineThatIsNotRunningOrHasADeviceWithoutStateIsNotSaved() throws {
        let idle = try Machine(MachineConfiguration(memorySize: 16 << 20))
        #expect { try idle.snapshot(to: MachineSnapshotTests.directory("idle")) } throws: { error in
            (error as? MachineError)?.step == .snapshot && "\(error)".contains("not running")
        }
        let withPlainDevice = try Machine(MachineConfiguration(memorySize: 16 << 20))
        try withPlainDevice.add(pio: PlainDevice(), port: 0x500, count: 4, name: "plain device")
        try withPlainDevice.load(.unikernel(image: GuestImages.timerTicks, hypercalls: try MachineSnapshotTests.services(CollectingSink()),
                                            argument: MachineSnapshotTests.record.rawValue))
        try withPlainDevice.start()
        defer {
            withPlainDevice.stop()
            _ = withPlainDevice.wait()
        }
        #expect { try withPlainDevice.snapshot(to: MachineSnapshotTests.directory("plain")) } throws: { error in
            (error as? MachineError)?.device == "plain device"
        }
    }

    /// A damaged state file, a memory file cut short, and a machine with other devices are
    /// each refused with the reason, before anything runs.
    @Test func damagedSnapshotsAndOtherMachinesAreRefused() throws {
        let directory = MachineSnapshotTests.directory("refusals")
        defer { MachineSnapshotTests.removeSnapshot(directory) }
        try Self.snapshotOfATicker(directory)
        let statePath = directory + "/" + MachineSnapshot.stateFileName
        let memoryPath = directory + "/" + MachineSnapshot.memoryFileName
        let original = try HostFile.readAll(FilePath(statePath))

        // Other devices than the saved machine's.
        let snapshot = try MachineSnapshot(directory: directory)
        let bare = try Machine(restoring: snapshot)
        #expect { try bare.restore() } throws: { "\($0)".contains("16550 serial") }

        // The saved guest made hypercalls: a restore without its services would leave its
        // doorbell unanswered.
        let withoutServices = try Machine(restoring: snapshot)
        try withoutServices.addLegacyDevices(console: CollectingSink())
        #expect { try withoutServices.restore() } throws: { error in
            (error as? MachineError)?.device == "hypercalls" && "\(error)".contains("restore(hypercalls:)")
        }

        // A flipped byte in the middle of the state.
        var damaged = original
        damaged[damaged.count / 2] ^= 0x40
        try Self.replace(statePath, with: damaged)
        #expect { try MachineSnapshot(directory: directory) } throws: { "\($0)".contains("checksum") }
        try Self.replace(statePath, with: Array(original.prefix(original.count - 3)))
        #expect(throws: MachineError.self) { try MachineSnapshot(directory: directory) }
        try Self.replace(statePath, with: original)

        // A memory file shorter than the RAM it should hold.
        #expect(truncate(memoryPath, 4 << 20) == 0)
        let short = try MachineSnapshot(directory: directory)
        #expect { try Machine(restoring: short) } throws: { "\($0)".contains("memory file") }
        unlink(memoryPath)
        #expect { try MachineSnapshot(directory: directory) } throws: { "\($0)".contains(memoryPath) }
    }

    static func replace(_ path: String, with bytes: [UInt8]) throws {
        let file = try FileDescriptor.open(FilePath(path), .writeOnly, options: [.truncate])
        defer { try? file.close() }
        _ = try bytes.withUnsafeBytes { try file.writeAll($0) }
    }
}

/// Two clones of one snapshot run side by side, each with its own copy of the guest's memory:
/// one mapped from the snapshot copy-on-write, one copied in.
@Suite("Machine snapshot clones", .serialized, .requiresKVM)
struct MachineSnapshotCloneTests {
    @Test func twoClonesDivergeIndependently() throws {
        let directory = MachineSnapshotTests.directory("clones")
        defer { MachineSnapshotTests.removeSnapshot(directory) }
        try MachineSnapshotRefusalTests.snapshotOfATicker(directory)
        let snapshot = try MachineSnapshot(directory: directory)
        var clones: [Machine] = []
        for index in 0..<2 {
            var configuration = MachineConfiguration()
            configuration.name = "clone\(index)"
            // One maps the snapshot's memory, the other copies it in.
            let clone = try Machine(restoring: snapshot, configuration, copyingMemory: index == 1)
            try clone.addLegacyDevices(console: CollectingSink())
            try clone.restore(hypercalls: try MachineSnapshotTests.services(CollectingSink()))
            clones.append(clone)
        }
        for clone in clones { try clone.start() }
        defer {
            for clone in clones {
                clone.stop()
                _ = clone.wait()
            }
        }
        let nonce = GuestAddress(MachineSnapshotTests.record.rawValue + 8)
        let saved = try clones[0].memory.read(UInt64.self, at: nonce)
        #expect(try clones[1].memory.read(UInt64.self, at: nonce) == saved)
        // Each clone writes its own mark where the other cannot see it; both keep ticking.
        try clones[0].memory.write(UInt64(0xAAAA), at: nonce)
        try clones[1].memory.write(UInt64(0xBBBB), at: nonce)
        #expect(try clones[0].memory.read(UInt64.self, at: nonce) == 0xAAAA)
        #expect(try clones[1].memory.read(UInt64.self, at: nonce) == 0xBBBB)
        let start = try clones.map { try MachineSnapshotTests.ticks($0) }
        #expect(waitUntil(seconds: 120) { clones.indices.allSatisfy { ((try? MachineSnapshotTests.ticks(clones[$0])) ?? 0) >= start[$0] + 3 } })
        // The snapshot's own memory is untouched by either.
        let file = try FileDescriptor.open(FilePath(snapshot.memoryPath), .readOnly)
        defer { try? file.close() }
        var bytes = [UInt8](repeating: 0, count: 8)
        _ = try bytes.withUnsafeMutableBytes { try file.read(fromAbsoluteOffset: Int64(nonce.rawValue), into: $0) }
        #expect(bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } == saved)
    }
}

/// A port device that does not save its state.
private final class PlainDevice: BusDevice {
    func read(offset: UInt64, width: AccessWidth) -> UInt64 { 0 }
    func write(offset: UInt64, width: AccessWidth, value: UInt64) {}
}

/// Diff snapshots: what changed since the last snapshot (the guest's writes through KVM's
/// dirty log, the VMM's through its own log), merged onto their base.
@Suite("Machine diff snapshots", .serialized, .requiresKVM)
struct MachineDiffSnapshotTests {
    static func bytes(_ path: String) throws -> [UInt8] {
        try HostFile.readAll(FilePath(path))
    }

    @Test func aDiffHoldsWhatChangedAndMergesOntoItsBaseAsAFullSnapshot() throws {
        let base = MachineSnapshotTests.directory("diff-base"), diff = MachineSnapshotTests.directory("diff")
        let full = MachineSnapshotTests.directory("diff-full")
        defer { for directory in [base, diff, full] { MachineSnapshotTests.removeSnapshot(directory) } }
        var configuration = MachineConfiguration(memorySize: 16 << 20)
        configuration.dirtyPageTracking = true
        let running = try MachineSnapshotTests.ticker(configuration)
        defer { running.finish() }
        let machine = running.machine
        #expect { try machine.snapshot(to: diff, kind: .diff) } throws: { "\($0)".contains("earlier snapshot") }
        try #require(waitUntil(seconds: 120) { try MachineSnapshotTests.ticks(machine) >= 2 })
        try machine.snapshot(to: base)

        // The VMM writes pages 100 to 199, as a device would; the guest goes on writing its
        // record (page 2048) on every tick.
        for page: UInt64 in 100..<200 { try machine.memory.write(page | 0xD1FF << 32, at: GuestAddress(page * 4096 + 8)) }
        let ticks = try MachineSnapshotTests.ticks(machine)
        try #require(waitUntil(seconds: 120) { try MachineSnapshotTests.ticks(machine) >= ticks + 2 })
        let report = try machine.snapshot(to: diff, kind: .diff, leavePaused: true)
        try machine.snapshot(to: full, leavePaused: true)

        let saved = try MachineSnapshot(directory: diff)
        let pages = Set(try #require(saved.diff).regions[0].flatMap { $0.start..<($0.start + $0.count) })
        #expect(pages.isSuperset(of: 100..<200), "the VMM's writes are missing: \(pages.sorted())")
        #expect(pages.contains(MachineSnapshotTests.record.rawValue / 4096), "the guest's own write is missing: \(pages.sorted())")
        // Besides those: the guest's stack, its IDT's neighbours, little else.
        #expect(pages.count < 100 + 1 + 24, "\(pages.count) pages: \(pages.sorted())")
        #expect(report.memoryBytesWritten == UInt64(pages.count) * 4096)
        #expect { try Machine(restoring: saved) } throws: { "\($0)".contains("merge") }

        // Base + diff is the full snapshot taken at the same moment, and it restores.
        #expect { try MachineSnapshot.merge(diff: diff, onto: full) } throws: { "\($0)".contains("another snapshot") }
        let merged = try MachineSnapshot.merge(diff: diff, onto: base)
        #expect(merged.diff == nil && merged.lineage.id == saved.lineage.id)
        let mergedMemory = try Self.bytes(base + "/" + MachineSnapshot.memoryFileName)
        #expect(byteDifference(mergedMemory, try Self.bytes(full + "/" + MachineSnapshot.memoryFileName)) == nil)
        machine.stop()
        _ = machine.wait()

        let restored = try Machine(restoring: merged)
        try restored.addLegacyDevices(console: CollectingSink())
        try restored.restore(hypercalls: try MachineSnapshotTests.services(CollectingSink()))
        #expect(try restored.memory.read(UInt64.self, at: GuestAddress(150 * 4096 + 8)) == 150 | 0xD1FF << 32)
        try restored.start()
        defer {
            restored.stop()
            _ = restored.wait()
        }
        let from = try MachineSnapshotTests.ticks(restored)
        #expect(waitUntil(seconds: 120) { ((try? MachineSnapshotTests.ticks(restored)) ?? 0) >= from + 2 })
    }

    /// The case, done by a guest: after the base, the guest writes pages 100 to 199
    /// and has its virtio-blk disk read a sector into page 300 (Guests/tender/dirty_pages.c).
    /// The diff holds those 101 pages, page 300 with the disk's bytes, which only the VMM's
    /// log saw (KVM's dirty log does not see a device's writes), and little else: the guest's
    /// record, its queue and request pages.
    @Test func aDiffHoldsTheGuestsWritesAndItsDisksRead() throws {
        let base = MachineSnapshotTests.directory("dirty-base"), diff = MachineSnapshotTests.directory("dirty-diff")
        defer { for directory in [base, diff] { MachineSnapshotTests.removeSnapshot(directory) } }
        let record = GuestAddress(8 << 20)
        let disk = try ScratchFile(size: 1 << 20) { UInt8(truncatingIfNeeded: $0 &* 7 &+ 1) }
        var configuration = MachineConfiguration(memorySize: 16 << 20)
        configuration.dirtyPageTracking = true
        let machine = try Machine(configuration)
        try machine.addLegacyDevices(console: CollectingSink())
        let slot = try machine.addDisk(path: disk.path, name: "disk0").slot
        let console = CollectingSink()
        try machine.load(.unikernel(image: GuestImages.dirtyPages, hypercalls: try MachineSnapshotTests.services(console),
                                    argument: (slot.window.start.rawValue >> 12) << 32 | record.rawValue >> 12))
        let running = try RunningGuest(machine)
        defer { running.finish() }
        let field = { (offset: UInt64) in try machine.memory.read(UInt64.self, at: GuestAddress(record.rawValue + offset)) }
        try #require(waitUntil(seconds: 120) { try field(0) == 0x59_5452_4944 }, "the guest did not set up its disk: \(console.text)")
        try machine.snapshot(to: base)

        try machine.memory.write(UInt64(1), at: GuestAddress(record.rawValue + 8))  // go
        try #require(waitUntil(seconds: 120) { try field(16) != 0 }, "the guest did not finish")
        #expect(try field(16) == 1, "the guest's disk read failed")
        try machine.snapshot(to: diff, kind: .diff, leavePaused: true)

        let saved = try MachineSnapshot(directory: diff)
        let pages = Set(try #require(saved.diff).regions[0].flatMap { $0.start..<($0.start + $0.count) })
        #expect(pages.isSuperset(of: 100..<200), "the guest's writes are missing: \(pages.sorted())")
        #expect(pages.contains(300), "the disk's write into page 300 is missing: \(pages.sorted())")
        #expect(pages.count < 101 + 16, "\(pages.count) pages: \(pages.sorted())")
        // The diff's copy of page 300 holds the sector the disk read.
        let memory = try MachineDiffSnapshotTests.bytes(diff + "/" + MachineSnapshot.memoryFileName)
        let runs = try #require(saved.diff).regions[0]
        var offset = 0
        for run in runs where run.start + run.count <= 300 { offset += Int(run.count) * 4096 }
        let run = try #require(runs.first { $0.start <= 300 && 300 < $0.start + $0.count })
        offset += Int(300 - run.start) * 4096
        #expect(Array(memory[offset..<(offset + 512)]) == (try disk.read(at: 0, count: 512)))
    }

    @Test func aDiffNeedsDirtyPageTracking() throws {
        let machine = try Machine(MachineConfiguration(memorySize: 16 << 20))
        try machine.load(.unikernel(image: GuestImages.timerTicks, hypercalls: try MachineSnapshotTests.services(CollectingSink()),
                                    argument: MachineSnapshotTests.record.rawValue))
        try machine.start()
        defer {
            machine.stop()
            _ = machine.wait()
        }
        #expect { try machine.snapshot(to: MachineSnapshotTests.directory("untracked"), kind: .diff) } throws: {
            "\($0)".contains("dirtyPageTracking")
        }
    }
}

/// A snapshot taken here, resumed by minivmm in a process of its own (under its seccomp
/// filters), which saves it again on SIGUSR1: the guest went on there, with its nonce.
@Suite("Machine snapshots across processes", .serialized, .requiresKVM,
       .enabled(if: MinivmmProcess.path != nil, "needs minivmm beside the test bundle (swift build --build-tests builds it)"))
struct MachineSnapshotProcessTests {
    @Test func minivmmRestoresInANewProcessAndSavesOnASignal() throws {
        let first = MachineSnapshotTests.directory("process-first"), second = MachineSnapshotTests.directory("process-second")
        defer { for directory in [first, second] { MachineSnapshotTests.removeSnapshot(directory) } }
        // Composed as minivmm composes a machine with no device options: the legacy set, and
        // its hypercall services for a guest without a kernel.
        let machine = try Machine(MachineConfiguration(memorySize: 16 << 20))
        try machine.addLegacyDevices(console: CollectingSink())
        try machine.load(.unikernel(image: GuestImages.timerTicks, hypercalls: try .essentials(console: CollectingSink()),
                                    argument: MachineSnapshotTests.record.rawValue))
        try machine.start()
        try #require(waitUntil(seconds: 120) { try MachineSnapshotTests.ticks(machine) >= 3 })
        try machine.snapshot(to: first, leavePaused: true)
        let nonce = try machine.memory.read(UInt64.self, at: GuestAddress(MachineSnapshotTests.record.rawValue + 8))
        let saved = try MachineSnapshotTests.ticks(machine)
        machine.stop()
        _ = machine.wait()

        let process = try MinivmmProcess(["--restore", first, "--snapshot-on-signal", "SIGUSR1,\(second)", "--console", "file:/dev/null"])
        defer { process.end() }
        // Saved again on SIGUSR1 until the guest has counted on in minivmm: a slow start (a
        // sanitizer, a loaded host) may leave it no time for a tick before the first signal.
        var record: [UInt64] = []
        var lastSnapshot: UInt64?
        let deadline = HostClock.monotonicDeadline(after: .seconds(240))
        while (record.last ?? 0) <= saved, HostClock.monotonicNanoseconds() < deadline {
            process.signal(SIGUSR1)
            let saving = waitUntil(seconds: 60) {
                guard let snapshot = try? MachineSnapshot(directory: second), snapshot.lineage.id != lastSnapshot else { return false }
                lastSnapshot = snapshot.lineage.id
                record = (try? Self.record(in: snapshot)) ?? []
                return true
            }
            try #require(saving, "minivmm saved nothing on SIGUSR1")
            if (record.last ?? 0) <= saved { usleep(200_000) }
        }
        process.signal(SIGTERM)
        #expect(process.wait() == 130, "minivmm did not stop cleanly on SIGTERM")
        #expect(record.first == MachineSnapshotTests.magic)
        #expect(record.dropFirst().first == nonce, "the guest was booted again")
        #expect((record.last ?? 0) > saved, "the guest did not go on counting in minivmm: \(record) after \(saved)")
    }

    /// The ticking guest's record (magic, nonce, ticks) in a snapshot's memory file.
    static func record(in snapshot: MachineSnapshot) throws -> [UInt64] {
        let memory = try FileDescriptor.open(FilePath(snapshot.memoryPath), .readOnly)
        defer { try? memory.close() }
        var bytes = [UInt8](repeating: 0, count: 24)
        _ = try bytes.withUnsafeMutableBytes { try memory.read(fromAbsoluteOffset: Int64(MachineSnapshotTests.record.rawValue), into: $0) }
        return bytes.withUnsafeBytes { raw in (0..<3).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) } }
    }
}

/// minivmm, built beside the test bundle, run as a child process.
final class MinivmmProcess {
    /// minivmm's path, if it was built.
    static let path: String? = {
        var buffer = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        guard length > 0 else { return nil }
        let executable = String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // The bundle is DIR/NAME.xctest (a file on Linux); minivmm is DIR/minivmm.
        guard let slash = executable.lastIndex(of: "/") else { return nil }
        let candidate = String(executable[..<slash]) + "/minivmm"
        return access(candidate, X_OK) == 0 ? candidate : nil
    }()

    let pid: pid_t
    private var status: Int32?

    init(_ arguments: [String]) throws {
        let path = try #require(Self.path)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        let argv: [UnsafeMutablePointer<CChar>?] = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, &actions, nil, argv, environ)
        try #require(result == 0, "posix_spawn: \(result)")
        self.pid = pid
    }

    func signal(_ number: Int32) {
        kill(pid, number)
    }

    /// Waits for the process; its exit status, or 128 plus the signal that ended it.
    func wait() -> Int32 {
        if let status { return status }
        var raw: Int32 = 0
        while waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
        let result = raw & 0x7F == 0 ? (raw >> 8) & 0xFF : 128 + (raw & 0x7F)
        status = result
        return result
    }

    /// Ends the process if it still runs.
    func end() {
        guard status == nil else { return }
        kill(pid, SIGKILL)
        _ = wait()
    }
}

/// A machine running a tiny guest for a test, under a watchdog that only guards against a
/// hang; `finish()` stops it.
final class RunningGuest {
    let machine: Machine
    private let watchdog: Watchdog

    /// Starts `machine` (loaded or restored).
    init(_ machine: Machine, seconds: Int = 300) throws {
        self.machine = machine
        watchdog = Watchdog(machine, seconds: seconds)
        do { try machine.start() } catch {
            watchdog.cancel()
            throw error
        }
    }

    /// Stops the machine and waits for its shutdown.
    func finish() {
        machine.stop()
        _ = machine.wait()
        watchdog.cancel()
    }
}

import Glibc
import HVCore
import HVKVM
import SystemPackage

/// A machine snapshot on disk, opened to restore from: a directory holding `state` (a
/// `SnapshotArchive`: the machine's shape, the VM, every vCPU and every device) and
/// `memory` (guest RAM, sparse). Opening reads and checks the state file (magic, version,
/// checksum) and opens the memory file; ``Machine/init(restoring:_:copyingMemory:)`` then maps the memory
/// copy-on-write, so pages are read only when the guest touches them and clones of one
/// snapshot share its page cache.
public final class MachineSnapshot: Sendable {
    /// The state file's name in a snapshot directory.
    public static let stateFileName = "state"
    /// The memory file's name in a snapshot directory.
    public static let memoryFileName = "memory"

    /// The snapshot's directory.
    public let directory: String
    /// The checked state.
    public let archive: SnapshotArchive
    /// What the saved machine was made of.
    public let machine: SavedMachine
    /// The snapshot's identity, and for a diff the snapshot it is the difference from.
    public let lineage: SnapshotLineage
    /// For a diff snapshot, the pages it holds; nil for a full one.
    public let diff: SnapshotDiff?
    /// The open memory file, closed with this object (a mapping of it outlives the descriptor).
    let memoryFile: FileDescriptor

    /// Opens the snapshot in `directory`; throws a ``MachineError`` for the restore step whose
    /// reason says what is wrong (no such file, a damaged or foreign state file, a memory file
    /// shorter than the memory it should hold).
    public init(directory: String) throws(MachineError) {
        self.directory = directory
        let statePath = directory + "/" + Self.stateFileName
        let bytes: [UInt8]
        do { bytes = try HostFile.readAll(FilePath(statePath)) } catch {
            throw MachineError(.restore, reason: "reading \(statePath): \(error)")
        }
        do {
            archive = try SnapshotArchive(decoding: bytes)
            var decoder = try archive.section(SavedMachine.sectionName).decoder(newestVersion: SavedMachine.encodingVersion)
            machine = try decoder.read(SavedMachine.self)
            var lineageDecoder = try archive.section(SnapshotLineage.sectionName).decoder(newestVersion: SnapshotLineage.encodingVersion)
            lineage = try lineageDecoder.read(SnapshotLineage.self)
            try lineageDecoder.expectEnd()
            if archive.sections.contains(where: { $0.name == SnapshotDiff.sectionName }) {
                var diffDecoder = try archive.section(SnapshotDiff.sectionName).decoder(newestVersion: SnapshotDiff.encodingVersion)
                let pages = try diffDecoder.read(SnapshotDiff.self)
                try diffDecoder.expectEnd()
                guard pages.fits(machine.memory) else {
                    throw SnapshotError.malformed(what: "the diff section", reason: "its pages do not fit the memory layout")
                }
                diff = pages
            } else {
                diff = nil
            }
        } catch {
            throw MachineError(.restore, reason: "\(statePath): \(error)")
        }
        let memoryPath = directory + "/" + Self.memoryFileName
        do {
            memoryFile = try FileDescriptor.open(FilePath(memoryPath), .readOnly, options: [.closeOnExec])
        } catch {
            throw MachineError(.restore, reason: "opening \(memoryPath): \(error)")
        }
    }

    deinit {
        try? memoryFile.close()
    }

    /// The memory file's path.
    public var memoryPath: String { directory + "/" + Self.memoryFileName }

    /// The state saved for vCPU `id`.
    func vcpuState(_ id: UInt32) throws(SnapshotError) -> VCPUState {
        var decoder = try archive.section("vcpu.\(id)").decoder(newestVersion: VCPUState.encodingVersion)
        let state = try decoder.read(VCPUState.self)
        try decoder.expectEnd()
        return state
    }

    /// The saved VM state.
    func vmState() throws(SnapshotError) -> VMState {
        var decoder = try archive.section("vm").decoder(newestVersion: VMState.encodingVersion)
        let state = try decoder.read(VMState.self)
        try decoder.expectEnd()
        return state
    }
}

/// A snapshot's identity and, for a diff, the snapshot it is the difference from: a diff is
/// merged only onto its own parent.
public struct SnapshotLineage: Sendable, Hashable, SnapshotCodable {
    static let sectionName = "lineage"
    static let encodingVersion: UInt16 = 1

    /// A random identity, new for each snapshot.
    public var id: UInt64
    /// The snapshot a diff is the difference from; nil for a full snapshot.
    public var parent: UInt64?

    /// Writes the value's fields in order.
    public func encode(to encoder: inout SnapshotEncoder) {
        encoder.append(id)
        encoder.append(parent ?? 0)
    }

    /// Reads the fields ``encode(to:)`` wrote, refusing values that cannot be right.
    public init(from decoder: inout SnapshotDecoder) throws(SnapshotError) {
        id = try decoder.read()
        let parent = try decoder.read(UInt64.self)
        self.parent = parent == 0 ? nil : parent
    }

    init(id: UInt64, parent: UInt64?) {
        self.id = id
        self.parent = parent
    }
}

/// The pages a diff snapshot holds: for each region of guest RAM, runs of pages (from the
/// region's start, ascending) that changed since its parent. The diff's memory file holds
/// them densely, one run after another in this order.
public struct SnapshotDiff: Sendable, Hashable, SnapshotCodable {
    static let sectionName = "memory.diff"
    static let encodingVersion: UInt16 = 1

    /// Consecutive pages: the first page's index and how many.
    public struct PageRun: Sendable, Hashable {
        /// The first page, counted from the region's start.
        public var start: UInt64
        /// How many pages.
        public var count: UInt64
    }

    /// The runs of each region.
    public var regions: [[PageRun]]

    /// How many pages the diff holds.
    public var pageCount: UInt64 { regions.joined().reduce(0) { $0 + $1.count } }

    /// Writes the value's fields in order.
    public func encode(to encoder: inout SnapshotEncoder) {
        encoder.append(UInt64(regions.count))
        for runs in regions {
            encoder.append(UInt64(runs.count))
            for run in runs {
                encoder.append(run.start)
                encoder.append(run.count)
            }
        }
    }

    /// Reads the runs, refusing empty, overlapping, unordered or overflowing ones.
    public init(from decoder: inout SnapshotDecoder) throws(SnapshotError) {
        let count = try decoder.readCount(elementSize: 8, limit: 64)
        regions = []
        for _ in 0..<count {
            let runCount = try decoder.readCount(elementSize: 16, limit: 1 << 24)
            var runs: [PageRun] = []
            var next: UInt64 = 0
            for _ in 0..<runCount {
                let start = try decoder.read(UInt64.self), length = try decoder.read(UInt64.self)
                let (end, overflow) = start.addingReportingOverflow(length)
                guard !overflow, length > 0, start >= next else {
                    throw .malformed(what: decoder.context, reason: "a run of \(length) pages from page \(start)")
                }
                runs.append(PageRun(start: start, count: length))
                next = end
            }
            regions.append(runs)
        }
    }

    /// The runs of `pages` (ascending page indices per region).
    init(pages: [[UInt64]]) {
        regions = pages.map { GuestMemoryMmap.runs($0).map { PageRun(start: $0.start, count: $0.count) } }
    }

    /// Whether every run lies inside its region of `layout`.
    func fits(_ layout: [SnapshotMemoryRegion]) -> Bool {
        regions.count == layout.count && zip(regions, layout).allSatisfy { runs, region in
            runs.last.map { $0.start + $0.count <= region.size / 4096 } ?? true
        }
    }
}

/// The shape of a saved machine: what a restore must rebuild before the state goes back in.
public struct SavedMachine: Sendable, Hashable, SnapshotCodable {
    static let sectionName = "machine"
    static let encodingVersion: UInt16 = 1

    /// The machine's name when it was saved.
    public var name: String
    /// Its vCPUs.
    public var vcpuCount: Int
    /// Whether it had the in-kernel interrupt controllers and PIT.
    public var interruptControllers: Bool
    /// Guest RAM's regions and where each is in the memory file.
    public var memory: [SnapshotMemoryRegion]
    /// The devices whose state was saved, in the order they were added; a restore adds the
    /// same devices in the same order.
    public var devices: [String]

    /// The bytes of guest RAM.
    public var memorySize: UInt64 { memory.reduce(0) { $0 + $1.size } }

    /// Writes the value's fields in order.
    public func encode(to encoder: inout SnapshotEncoder) {
        encoder.append(name)
        encoder.append(UInt32(vcpuCount))
        encoder.append(interruptControllers)
        encoder.append(UInt64(memory.count))
        for region in memory { encoder.append(region) }
        encoder.append(UInt64(devices.count))
        for device in devices { encoder.append(device) }
    }

    /// Reads the fields ``encode(to:)`` wrote, refusing values that cannot be right.
    public init(from decoder: inout SnapshotDecoder) throws(SnapshotError) {
        name = try decoder.readString()
        let vcpus = try decoder.read(UInt32.self)
        guard (1...254).contains(vcpus) else { throw .malformed(what: decoder.context, reason: "\(vcpus) vCPUs") }
        vcpuCount = Int(vcpus)
        interruptControllers = try decoder.read()
        let regions = try decoder.readCount(elementSize: 24, limit: 64)
        memory = []
        for _ in 0..<regions { memory.append(try decoder.read()) }
        guard !memory.isEmpty else { throw .malformed(what: decoder.context, reason: "no memory regions") }
        let count = try decoder.readCount(elementSize: 8, limit: 4096)
        devices = []
        for _ in 0..<count { devices.append(try decoder.readString()) }
        try decoder.expectEnd()
    }

    init(name: String, vcpuCount: Int, interruptControllers: Bool, memory: [SnapshotMemoryRegion], devices: [String]) {
        self.name = name
        self.vcpuCount = vcpuCount
        self.interruptControllers = interruptControllers
        self.memory = memory
        self.devices = devices
    }
}

/// Writes `path` through a file beside it that is synced and renamed over it, so that
/// `path` holds the old bytes or the new ones, never a part.
func writeReplacing(_ path: String, step: MachineError.Step = .snapshot, _ body: (FileDescriptor, String) throws(SnapshotError) -> Void) throws(MachineError) {
    let partial = path + ".partial"
    do throws(SnapshotError) {
        let file: FileDescriptor
        do {
            file = try FileDescriptor.open(FilePath(partial), .writeOnly, options: [.create, .truncate, .closeOnExec],
                                           permissions: [.ownerReadWrite, .groupRead, .otherRead])
        } catch {
            throw .io(operation: "open", path: partial, (error as? Errno) ?? .ioError)
        }
        defer { try? file.close() }
        try body(file, partial)
        guard fsync(file.rawValue) == 0 else { throw .io(operation: "fsync", path: partial, Errno(rawValue: errno)) }
        guard unsafe rename(partial, path) == 0 else { throw .io(operation: "rename", path: partial, Errno(rawValue: errno)) }
    } catch {
        unsafe unlink(partial)
        throw MachineError(step, error)
    }
}

extension MachineSnapshot {
    /// Applies the diff snapshot in `diff` to the snapshot in `base`, its parent: the diff's
    /// pages are written into the base's memory file, then the base's state becomes the diff's,
    /// so that `base` holds a full snapshot of the machine as the diff saw it (and a later diff
    /// of that machine merges onto it in turn). Refuses a diff whose parent is another
    /// snapshot, and layouts that differ. Not atomic: until it returns, `base` may hold new
    /// pages with the old state; run it again to finish (the pages are simply written again).
    @discardableResult
    public static func merge(diff: String, onto base: String) throws(MachineError) -> MachineSnapshot {
        let child = try MachineSnapshot(directory: diff)
        let parent = try MachineSnapshot(directory: base)
        guard let pages = child.diff else {
            throw MachineError(.restore, reason: "\(diff) is a full snapshot, not a diff")
        }
        guard child.lineage.parent == parent.lineage.id else {
            throw MachineError(.restore, reason: "\(diff) is the difference from another snapshot than the one in \(base)")
        }
        guard child.machine.memory == parent.machine.memory else {
            throw MachineError(.restore, reason: "\(diff) and \(base) have different memory layouts")
        }
        let target: FileDescriptor
        do { target = try FileDescriptor.open(FilePath(parent.memoryPath), .writeOnly, options: [.closeOnExec]) } catch {
            throw MachineError(.restore, reason: "opening \(parent.memoryPath): \(error)")
        }
        defer { try? target.close() }
        let page: UInt64 = 4096
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        // The diff's pages are dense in its file: `source` walks it as the runs go.
        var source: UInt64 = 0
        for (runs, region) in zip(pages.regions, child.machine.memory) {
            for run in runs {
                var offset = region.fileOffset + run.start * page
                let end = offset + run.count * page
                while offset < end {
                    let length = Int(min(UInt64(buffer.count), end - offset))
                    do {
                        let got = try unsafe buffer.withUnsafeMutableBytes { bytes in
                            try unsafe child.memoryFile.read(fromAbsoluteOffset: Int64(source), into: UnsafeMutableRawBufferPointer(rebasing: bytes[..<length]))
                        }
                        guard got == length else {
                            throw SnapshotError.truncated(what: "the diff's memory file", offset: Int(source), needed: length, available: got)
                        }
                        _ = try unsafe buffer.withUnsafeBytes { bytes in
                            try unsafe target.writeAll(toAbsoluteOffset: Int64(offset), UnsafeRawBufferPointer(rebasing: bytes[..<length]))
                        }
                    } catch {
                        throw MachineError(.restore, reason: "copying the diff's pages into \(parent.memoryPath): \(error)")
                    }
                    offset += UInt64(length)
                    source += UInt64(length)
                }
            }
        }
        guard fsync(target.rawValue) == 0 else {
            throw MachineError(.restore, reason: "fsync of \(parent.memoryPath): \(Errno(rawValue: errno))")
        }
        var state = child.archive
        state.sections.removeAll { $0.name == SnapshotDiff.sectionName }
        let bytes = state.encoded()
        try writeReplacing(base + "/" + stateFileName, bytes: bytes, step: .restore)
        return try MachineSnapshot(directory: base)
    }
}

/// Writes `bytes` as the file `path`, through ``writeReplacing(_:step:_:)``.
func writeReplacing(_ path: String, bytes: [UInt8], step: MachineError.Step) throws(MachineError) {
    try writeReplacing(path, step: step) { (file, partial) throws(SnapshotError) in
        do {
            _ = try unsafe bytes.withUnsafeBytes { try unsafe file.writeAll($0) }
        } catch {
            throw .io(operation: "write", path: partial, (error as? Errno) ?? .ioError)
        }
    }
}

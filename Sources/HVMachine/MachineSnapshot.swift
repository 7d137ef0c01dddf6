import Glibc
import HVCore
import HVKVM
import SystemPackage

/// A machine snapshot on disk, opened to restore from: a directory holding `state` (a
/// ``SnapshotArchive``: the machine's shape, the VM, every vCPU and every device) and
/// `memory` (guest RAM, sparse). Opening reads and checks the state file (magic, version,
/// checksum) and opens the memory file; ``Machine/init(restoring:_:)`` then maps the memory
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

    public func encode(to encoder: inout SnapshotEncoder) {
        encoder.append(name)
        encoder.append(UInt32(vcpuCount))
        encoder.append(interruptControllers)
        encoder.append(UInt64(memory.count))
        for region in memory { encoder.append(region) }
        encoder.append(UInt64(devices.count))
        for device in devices { encoder.append(device) }
    }

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

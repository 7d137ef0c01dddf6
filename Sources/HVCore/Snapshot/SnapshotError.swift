import SystemPackage

/// Why a snapshot could not be written, read or restored. Reading never trusts the file: a
/// wrong magic, a future version, a flipped byte or a cut-off file each get their own case.
public enum SnapshotError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The file does not start with HVKit's snapshot magic.
    case notASnapshot(magic: [UInt8])
    /// The file was written by a format this HVKit cannot read (a newer major version, or an
    /// older one with no migration).
    case unsupportedVersion(major: UInt16, minor: UInt16, readable: ClosedRange<UInt16>)
    /// A checksum does not match the bytes it covers (`what`: "the header", "the vm
    /// section", "the state" of an older format): the file was changed or damaged.
    case checksumMismatch(what: String, stored: UInt64, computed: UInt64)
    /// The data ends before `what` does.
    case truncated(what: String, offset: Int, needed: Int, available: Int)
    /// A section the restore needs is not in the snapshot.
    case missingSection(String)
    /// A section of a version newer than this HVKit reads.
    case unsupportedSectionVersion(section: String, version: UInt16, newest: UInt16)
    /// A field holds a value that cannot be right.
    case malformed(what: String, reason: String)
    /// The snapshot does not fit what it is being restored into (another layout, other devices, a missing host feature).
    case incompatible(String)
    /// A system call on a snapshot file failed.
    case io(operation: String, path: String, Errno)

    /// What went wrong, naming the part of the snapshot.
    public var description: String {
        switch self {
        case let .notASnapshot(magic):
            return "not an HVKit snapshot (it starts with \(magic.map { String($0, radix: 16) }.joined(separator: " ")))"
        case let .unsupportedVersion(major, minor, readable):
            return "snapshot format \(major).\(minor) cannot be read here (this HVKit reads major versions \(readable.lowerBound) to \(readable.upperBound))"
        case let .checksumMismatch(what, stored, computed):
            return "the snapshot's \(what) is damaged: its checksum is 0x\(String(stored, radix: 16)), its bytes sum to 0x\(String(computed, radix: 16))"
        case let .truncated(what, offset, needed, available):
            return "the snapshot ends inside \(what): \(needed) bytes needed at offset \(offset), \(available) there"
        case let .missingSection(name):
            return "the snapshot has no \(name) section"
        case let .unsupportedSectionVersion(section, version, newest):
            return "the snapshot's \(section) section is version \(version); this HVKit reads up to \(newest)"
        case let .malformed(what, reason):
            return "the snapshot's \(what) is malformed: \(reason)"
        case let .incompatible(reason):
            return "the snapshot does not fit: \(reason)"
        case let .io(operation, path, errno):
            return "\(operation) of \(path) failed: \(errno)"
        }
    }
}

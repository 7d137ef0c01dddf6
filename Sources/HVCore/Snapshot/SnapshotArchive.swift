/// One named part of a snapshot's state (a vCPU, the VM's interrupt controllers, a device),
/// with a version of its own so that each part can evolve without the others.
public struct SnapshotSection: Sendable, Hashable {
    /// The part's name, unique in its archive ("vcpu.0", "vm", "device.serial").
    public var name: String
    /// The version of the part's encoding.
    public var version: UInt16
    /// The part's bytes, as its ``SnapshotEncoder`` wrote them.
    public var payload: [UInt8]

    /// A section named `name`, of encoding `version`.
    public init(name: String, version: UInt16, payload: [UInt8]) {
        self.name = name
        self.version = version
        self.payload = payload
    }

    /// A decoder over the payload, after checking that this HVKit reads the section's version.
    public func decoder(newestVersion: UInt16) throws(SnapshotError) -> SnapshotDecoder {
        guard version <= newestVersion else {
            throw .unsupportedSectionVersion(section: name, version: version, newest: newestVersion)
        }
        return SnapshotDecoder(payload, context: "\(name) section")
    }

    /// Puts the section back into `part`, which wrote it: checks that `part` reads the
    /// section's version, then has it restore itself from the payload at that version.
    public func restore(into part: some SnapshotStateful) throws(SnapshotError) {
        var decoder = try decoder(newestVersion: part.snapshotVersion)
        try part.restoreState(from: &decoder, version: version)
    }
}

/// The state file of a snapshot: a header (magic, format version, the producer, a table of
/// the sections with a CRC-64 of each) with a CRC-64 of its own, then the sections' bytes.
///
/// ```
/// "HVKITSNP"  major u16  minor u16  header length u32 (the bytes that follow, up to the CRC)
/// producer (u64 length + UTF-8)  section count u32
/// per section: name (u64 length + UTF-8)  version u16  length u64  CRC-64/XZ of its bytes u64
/// CRC-64/XZ of everything above, u64
/// the sections' bytes, in table order, back to back, to the end of the file
/// ```
/// All integers are little-endian. Reading checks the magic, then the version, then the
/// header's checksum, then every length, then each section's checksum, so a damaged or
/// hostile file is refused with the reason (naming the damaged section) and never read past
/// its end. Format 1.0, which the first snapshots used (one checksum at the end of the file),
/// is still read: see `SnapshotArchive+Version1.swift`.
public struct SnapshotArchive: Sendable, Hashable {
    /// The first eight bytes of every HVKit snapshot state file.
    public static let magic: [UInt8] = Array("HVKITSNP".utf8)
    /// The format version written by this HVKit.
    public static let currentVersion = (major: UInt16(2), minor: UInt16(0))
    /// The major versions this HVKit reads (older ones through a migration step).
    public static let readableMajorVersions: ClosedRange<UInt16> = 1...2
    /// The most sections an archive may hold.
    public static let sectionLimit = 4096
    /// The largest header (producer and section table) a reader accepts: far above the
    /// 4096 sections' entries, far below what would cost anything to check.
    static let headerLimit = 1 << 20
    /// Magic, major, minor and the header's length: the part before the header.
    static let preambleSize = 8 + 2 + 2 + 4

    /// The format version the archive was written with (the current one for an archive made
    /// here, the file's for one read).
    public var version: (major: UInt16, minor: UInt16)
    /// What wrote the archive ("HVKit 0.9").
    public var producer: String
    /// The sections, in the order written.
    public var sections: [SnapshotSection]

    /// An archive of `sections` in the current format.
    public init(producer: String, sections: [SnapshotSection] = []) {
        self.version = Self.currentVersion
        self.producer = producer
        self.sections = sections
    }

    /// Whether the version, the producer and every section are equal.
    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.version == rhs.version && lhs.producer == rhs.producer && lhs.sections == rhs.sections
    }

    /// Hashes every field.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(version.major)
        hasher.combine(version.minor)
        hasher.combine(producer)
        hasher.combine(sections)
    }

    /// The section named `name`.
    public func section(_ name: String) throws(SnapshotError) -> SnapshotSection {
        guard let section = sections.first(where: { $0.name == name }) else { throw .missingSection(name) }
        return section
    }

    /// Adds a section made by `encode`.
    public mutating func add(_ name: String, version: UInt16, _ encode: (inout SnapshotEncoder) -> Void) {
        var encoder = SnapshotEncoder()
        encode(&encoder)
        sections.append(SnapshotSection(name: name, version: version, payload: encoder.bytes))
    }

    /// The archive as bytes, in the current format (whatever format it was read from).
    public func encoded() -> [UInt8] {
        var header = SnapshotEncoder()
        header.append(producer)
        header.append(UInt32(sections.count))
        for section in sections {
            header.append(section.name)
            header.append(section.version)
            header.append(UInt64(section.payload.count))
            header.append(CRC64.checksum(section.payload))
        }
        var encoder = SnapshotEncoder()
        for byte in Self.magic { encoder.append(byte) }
        encoder.append(Self.currentVersion.major)
        encoder.append(Self.currentVersion.minor)
        encoder.append(UInt32(header.bytes.count))
        var bytes = encoder.bytes + header.bytes
        var checksum = SnapshotEncoder()
        checksum.append(CRC64.checksum(bytes))
        bytes += checksum.bytes
        for section in sections { bytes += section.payload }
        return bytes
    }

    /// Reads an archive, refusing a wrong magic, a version this HVKit does not read, and a
    /// damaged or cut-off file.
    public init(decoding bytes: [UInt8]) throws(SnapshotError) {
        guard bytes.count >= Self.magic.count, Array(bytes.prefix(Self.magic.count)) == Self.magic else {
            throw .notASnapshot(magic: Array(bytes.prefix(Self.magic.count)))
        }
        var preamble = SnapshotDecoder(Array(bytes.prefix(Self.preambleSize)), context: "the snapshot header")
        _ = try preamble.readFixed(Self.magic.count)
        let major = try preamble.read(UInt16.self), minor = try preamble.read(UInt16.self)
        // The version before any checksum: another format may checksum differently, and
        // saying "newer version" helps more than "damaged".
        guard Self.readableMajorVersions.contains(major) else {
            throw .unsupportedVersion(major: major, minor: minor, readable: Self.readableMajorVersions)
        }
        version = (major, minor)
        if major == 1 {
            (producer, sections) = try Self.decodeVersion1(bytes)
            return
        }
        let headerLength = Int(try preamble.read(UInt32.self))
        guard headerLength <= Self.headerLimit else {
            throw .malformed(what: "the snapshot header", reason: "a header of \(headerLength) bytes, more than the \(Self.headerLimit) allowed")
        }
        let headerEnd = Self.preambleSize + headerLength
        let checksumSize = MemoryLayout<UInt64>.size
        guard bytes.count >= headerEnd + checksumSize else {
            throw .truncated(what: "the snapshot header", offset: Self.preambleSize, needed: headerLength + checksumSize,
                             available: bytes.count - Self.preambleSize)
        }
        var trailer = SnapshotDecoder(Array(bytes[headerEnd..<(headerEnd + checksumSize)]), context: "the header's checksum")
        let stored = try trailer.read(UInt64.self)
        let computed = CRC64.checksum(bytes[..<headerEnd])
        guard stored == computed else { throw .checksumMismatch(what: "header", stored: stored, computed: computed) }

        var header = SnapshotDecoder(Array(bytes[Self.preambleSize..<headerEnd]), context: "the snapshot header")
        producer = try header.readString()
        let count = try Self.readSectionCount(&header)
        var offset = headerEnd + checksumSize
        var sections: [SnapshotSection] = []
        var names = Set<String>()
        for index in 0..<count {
            header.context = "the header's entry \(index)"
            let name = try header.readString()
            let sectionVersion = try header.read(UInt16.self)
            let length = try header.read(UInt64.self)
            let checksum = try header.read(UInt64.self)
            guard names.insert(name).inserted else {
                throw .malformed(what: "the header's entry \(index)", reason: "a second section named \(name)")
            }
            // Within what is left, before any arithmetic or allocation with it.
            guard length <= UInt64(bytes.count - offset) else {
                throw .truncated(what: "the \(name) section", offset: offset, needed: Int(clamping: length), available: bytes.count - offset)
            }
            let payload = bytes[offset..<(offset + Int(length))]
            let computed = CRC64.checksum(payload)
            guard computed == checksum else { throw .checksumMismatch(what: "\(name) section", stored: checksum, computed: computed) }
            sections.append(SnapshotSection(name: name, version: sectionVersion, payload: Array(payload)))
            offset += Int(length)
        }
        header.context = "the snapshot header"
        try header.expectEnd()
        guard offset == bytes.count else {
            throw .malformed(what: "the snapshot's end", reason: "\(bytes.count - offset) bytes follow its last section")
        }
        self.sections = sections
    }

    /// The number of sections, within ``sectionLimit``.
    static func readSectionCount(_ decoder: inout SnapshotDecoder) throws(SnapshotError) -> Int {
        let count = try decoder.read(UInt32.self)
        guard count <= Self.sectionLimit else {
            throw .malformed(what: "the snapshot header", reason: "\(count) sections, more than the \(Self.sectionLimit) allowed")
        }
        return Int(count)
    }
}

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
}

/// The state file of a snapshot: a header (magic, format version, the producer), named
/// sections, and a CRC-64 over all of it.
///
/// ```
/// "HVKITSNP"  major u16  minor u16  producer (u64 length + UTF-8)  section count u32
/// per section: name (u64 length + UTF-8)  version u16  payload (u64 length + bytes)
/// CRC-64/XZ of everything above, u64
/// ```
/// All integers are little-endian. Reading checks the magic, then the checksum over the whole
/// file, then the version, then every length, so a damaged or hostile file is refused with
/// the reason and never read past its end.
public struct SnapshotArchive: Sendable, Hashable {
    /// The first eight bytes of every HVKit snapshot state file.
    public static let magic: [UInt8] = Array("HVKITSNP".utf8)
    /// The format version written by this HVKit.
    public static let currentVersion = (major: UInt16(1), minor: UInt16(0))
    /// The major versions this HVKit reads (older ones through a migration step).
    public static let readableMajorVersions: ClosedRange<UInt16> = 1...1
    /// The most sections an archive may hold.
    public static let sectionLimit = 4096

    /// The format version the archive was written with.
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

    /// The archive as bytes, checksum last.
    public func encoded() -> [UInt8] {
        var encoder = SnapshotEncoder()
        for byte in Self.magic { encoder.append(byte) }
        encoder.append(version.major)
        encoder.append(version.minor)
        encoder.append(producer)
        encoder.append(UInt32(sections.count))
        for section in sections {
            encoder.append(section.name)
            encoder.append(section.version)
            encoder.append(bytes: section.payload)
        }
        encoder.append(CRC64.checksum(encoder.bytes))
        return encoder.bytes
    }

    /// Reads an archive, refusing a wrong magic, a damaged or cut-off file and a version this
    /// HVKit does not read.
    public init(decoding bytes: [UInt8]) throws(SnapshotError) {
        guard bytes.count >= Self.magic.count, Array(bytes.prefix(Self.magic.count)) == Self.magic else {
            throw .notASnapshot(magic: Array(bytes.prefix(Self.magic.count)))
        }
        let checksumSize = MemoryLayout<UInt64>.size
        guard bytes.count >= Self.magic.count + 4 + checksumSize else {
            throw .truncated(what: "the snapshot header", offset: Self.magic.count, needed: 4 + checksumSize,
                             available: bytes.count - Self.magic.count)
        }
        let body = Array(bytes[..<(bytes.count - checksumSize)])
        var trailer = SnapshotDecoder(Array(bytes[(bytes.count - checksumSize)...]), context: "the checksum")
        let stored = try trailer.read(UInt64.self)
        let computed = CRC64.checksum(body)
        var decoder = SnapshotDecoder(body, context: "the snapshot header")
        _ = try decoder.readFixed(Self.magic.count)
        let major = try decoder.read(UInt16.self), minor = try decoder.read(UInt16.self)
        // The version before the checksum: a future format may checksum differently, and
        // saying "newer version" helps more than "damaged".
        guard Self.readableMajorVersions.contains(major) else {
            throw .unsupportedVersion(major: major, minor: minor, readable: Self.readableMajorVersions)
        }
        guard stored == computed else { throw .checksumMismatch(stored: stored, computed: computed) }
        version = (major, minor)
        producer = try decoder.readString()
        let count = try decoder.read(UInt32.self)
        guard count <= Self.sectionLimit else {
            throw .malformed(what: "the snapshot header", reason: "\(count) sections, more than the \(Self.sectionLimit) allowed")
        }
        var sections: [SnapshotSection] = []
        var names = Set<String>()
        for index in 0..<Int(count) {
            decoder.context = "section \(index)"
            let name = try decoder.readString()
            let sectionVersion = try decoder.read(UInt16.self)
            let payload = try decoder.readBytes()
            guard names.insert(name).inserted else {
                throw .malformed(what: "section \(index)", reason: "a second section named \(name)")
            }
            sections.append(SnapshotSection(name: name, version: sectionVersion, payload: payload))
        }
        decoder.context = "the snapshot's end"
        try decoder.expectEnd()
        self.sections = sections
    }
}

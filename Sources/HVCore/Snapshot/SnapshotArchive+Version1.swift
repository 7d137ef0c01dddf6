/// Format 1.0, the first snapshots' (HVKit 0.9.0-dev): the same sections as format 2, written
/// inline (each with its length) and covered by one CRC-64 at the end of the file.
///
/// ```
/// "HVKITSNP"  major u16 (1)  minor u16  producer (u64 length + UTF-8)  section count u32
/// per section: name (u64 length + UTF-8)  version u16  payload (u64 length + bytes)
/// CRC-64/XZ of everything above, u64
/// ```
/// The migration step from it to format 2 is in the layout only: sections carry their own
/// versions, so their contents are read as they are, and each part's `restoreState` migrates
/// its own older versions. Writing it back (``encodedVersion1()``) is for the tests that prove
/// an old file restores, and for handing a snapshot to an HVKit that reads only 1.0.
extension SnapshotArchive {
    /// The producer and sections of a format 1 file, after its checksum was checked.
    static func decodeVersion1(_ bytes: [UInt8]) throws(SnapshotError) -> (producer: String, sections: [SnapshotSection]) {
        let checksumSize = MemoryLayout<UInt64>.size
        guard bytes.count >= Self.magic.count + 4 + checksumSize else {
            throw .truncated(what: "the snapshot header", offset: Self.magic.count, needed: 4 + checksumSize,
                             available: bytes.count - Self.magic.count)
        }
        let body = Array(bytes[..<(bytes.count - checksumSize)])
        var trailer = SnapshotDecoder(Array(bytes[(bytes.count - checksumSize)...]), context: "the checksum")
        let stored = try trailer.read(UInt64.self)
        let computed = CRC64.checksum(body)
        guard stored == computed else { throw .checksumMismatch(what: "state", stored: stored, computed: computed) }
        var decoder = SnapshotDecoder(body, context: "the snapshot header")
        _ = try decoder.readFixed(Self.magic.count + 4)
        let producer = try decoder.readString()
        let count = try Self.readSectionCount(&decoder)
        var sections: [SnapshotSection] = []
        var names = Set<String>()
        for index in 0..<count {
            decoder.context = "section \(index)"
            let name = try decoder.readString()
            let version = try decoder.read(UInt16.self)
            let payload = try decoder.readBytes()
            guard names.insert(name).inserted else {
                throw .malformed(what: "section \(index)", reason: "a second section named \(name)")
            }
            sections.append(SnapshotSection(name: name, version: version, payload: payload))
        }
        decoder.context = "the snapshot's end"
        try decoder.expectEnd()
        return (producer, sections)
    }

    /// The archive as format 1.0 bytes.
    public func encodedVersion1() -> [UInt8] {
        var encoder = SnapshotEncoder()
        for byte in Self.magic { encoder.append(byte) }
        encoder.append(UInt16(1))
        encoder.append(UInt16(0))
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
}

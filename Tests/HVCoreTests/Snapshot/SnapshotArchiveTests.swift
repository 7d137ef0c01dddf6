import HVCore
import SystemPackage
import Testing

@Suite("Snapshot archive")
struct SnapshotArchiveTests {
    static func sample() -> SnapshotArchive {
        var archive = SnapshotArchive(producer: "HVKit tests")
        archive.add("vcpu.0", version: 1) { encoder in
            encoder.append(UInt64(0x1122_3344_5566_7788))
            encoder.append(bytes: [UInt8](repeating: 0xAB, count: 300))
            encoder.append("a string")
        }
        archive.add("vm", version: 2) { encoder in
            encoder.append(true)
            encoder.append(array: [UInt32(1), 2, 3])
        }
        return archive
    }

    @Test func theChecksumIsCRC64XZ() {
        #expect(CRC64.checksum(Array("123456789".utf8)) == 0x995D_C9BB_DF19_39FA)
        #expect(CRC64.checksum([]) == 0)
    }

    @Test func anArchiveReadsBackAsWritten() throws {
        let archive = Self.sample()
        let decoded = try SnapshotArchive(decoding: archive.encoded())
        #expect(decoded == archive)
        var vcpu = try decoded.section("vcpu.0").decoder(newestVersion: 1)
        #expect(try vcpu.read(UInt64.self) == 0x1122_3344_5566_7788)
        #expect(try vcpu.readBytes() == [UInt8](repeating: 0xAB, count: 300))
        #expect(try vcpu.readString() == "a string")
        try vcpu.expectEnd()
        var vm = try decoded.section("vm").decoder(newestVersion: 2)
        #expect(try vm.read(Bool.self))
        #expect(try vm.readArray(of: UInt32.self) == [1, 2, 3])
        #expect(throws: SnapshotError.missingSection("device.rng")) { try decoded.section("device.rng") }
        #expect(throws: SnapshotError.unsupportedSectionVersion(section: "vm", version: 2, newest: 1)) {
            try decoded.section("vm").decoder(newestVersion: 1)
        }
    }

    /// Both formats this HVKit reads: the current one and 1.0, the first snapshots'.
    static let formats: [(name: String, encode: @Sendable (SnapshotArchive) -> [UInt8])] = [
        ("2.0", { $0.encoded() }), ("1.0", { $0.encodedVersion1() }),
    ]

    /// A flipped bit anywhere in the file is refused: in the magic as not a snapshot, in the
    /// version as a version this HVKit does not read, anywhere else by a checksum or a length
    /// that no longer fits.
    @Test(arguments: formats.map(\.name))
    func aFlippedBitAnywhereIsRefused(format: String) throws {
        let bytes = try #require(Self.formats.first { $0.name == format }).encode(Self.sample())
        for offset in bytes.indices {
            for bit in [0, 7] {
                var damaged = bytes
                damaged[offset] ^= 1 << bit
                #expect(throws: SnapshotError.self, "a flip at byte \(offset) bit \(bit) was accepted") {
                    try SnapshotArchive(decoding: damaged)
                }
            }
        }
    }

    /// In the current format, damage inside a section's bytes names that section.
    @Test func damageInASectionNamesIt() throws {
        let bytes = Self.sample().encoded()
        var damaged = bytes
        damaged[bytes.count - 3] ^= 0x10  // inside the last section, "vm"
        #expect { try SnapshotArchive(decoding: damaged) } throws: { error in
            guard case let .checksumMismatch(what, _, _) = error as? SnapshotError else { return false }
            return what == "vm section" && "\(error)".contains("vm section is damaged")
        }
        // Bytes after the last section are refused too.
        #expect { try SnapshotArchive(decoding: bytes + [0]) } throws: { "\($0)".contains("1 bytes follow its last section") }
    }

    @Test(arguments: formats.map(\.name))
    func aFileCutAnywhereIsRefused(format: String) throws {
        let bytes = try #require(Self.formats.first { $0.name == format }).encode(Self.sample())
        for length in 0..<bytes.count {
            #expect(throws: SnapshotError.self, "a file cut to \(length) bytes was accepted") {
                try SnapshotArchive(decoding: Array(bytes.prefix(length)))
            }
        }
    }

    @Test func aWrongMagicAndAFutureVersionAreNamed() throws {
        var bytes = Self.sample().encoded()
        var wrong = bytes
        wrong[0] = UInt8(ascii: "X")
        #expect(throws: SnapshotError.notASnapshot(magic: Array("XVKITSNP".utf8))) { try SnapshotArchive(decoding: wrong) }
        // Major version 3: named before any checksum, which a future format may compute
        // differently.
        bytes[8] = 3
        #expect(throws: SnapshotError.unsupportedVersion(major: 3, minor: 0, readable: 1...2)) {
            try SnapshotArchive(decoding: bytes)
        }
        #expect("\(SnapshotError.unsupportedVersion(major: 3, minor: 0, readable: 1...2))".contains("3.0"))
    }

    /// The migration step: a 1.0 file (one checksum at its end, sections inline) reads as the
    /// same sections, and writes back in the current format.
    @Test func aFormat1ArchiveReadsAndWritesBackInTheCurrentFormat() throws {
        let archive = Self.sample()
        let old = try SnapshotArchive(decoding: archive.encodedVersion1())
        #expect(old.version == (1, 0))
        #expect(old.producer == archive.producer && old.sections == archive.sections)
        let upgraded = try SnapshotArchive(decoding: old.encoded())
        #expect(upgraded.version == SnapshotArchive.currentVersion)
        #expect(upgraded.sections == archive.sections)
        var damaged = archive.encodedVersion1()
        damaged[40] ^= 1
        #expect { try SnapshotArchive(decoding: damaged) } throws: { "\($0)".contains("state is damaged") }
    }

    /// A state file HVKit 0.9.0-dev wrote in format 1.0 (a 128 MiB machine with the legacy
    /// devices, a disk and a virtio console, saved by hv-bench) reads with every section.
    @Test func aStateFileTheFirstFormatWroteReads() throws {
        let path = #filePath.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
            + "/Fixtures/format-1.0.state"
        let bytes = try HostFile.readAll(FilePath(path))
        let archive = try SnapshotArchive(decoding: bytes)
        #expect(archive.version == (1, 0))
        #expect(archive.producer == "HVKit 0.9.0-dev")
        #expect(archive.sections.map(\.name) == ["lineage", "machine", "vcpu.0", "vm", "device.0.16550 serial", "device.1.i8042",
                                                  "device.2.CMOS clock", "device.3.virtio-blk disk0", "device.4.virtio-console 1"])
        #expect(archive.sections.allSatisfy { $0.version == 1 })
        #expect(try SnapshotArchive(decoding: archive.encoded()).sections == archive.sections)
    }

    /// Counts and lengths are checked against what is there before anything is allocated.
    @Test func hostileLengthsAreRefusedBeforeTheyAllocate() throws {
        var encoder = SnapshotEncoder()
        encoder.append(UInt64.max)
        var decoder = SnapshotDecoder(encoder.bytes, context: "test")
        #expect(throws: SnapshotError.self) { try decoder.readBytes() }
        var counts = SnapshotDecoder(encoder.bytes, context: "test")
        #expect(throws: SnapshotError.self) { try counts.readArray(of: UInt64.self) }
        var flag = SnapshotDecoder([2], context: "test")
        #expect(throws: SnapshotError.malformed(what: "test", reason: "a flag holds 2")) { try flag.read(Bool.self) }
        var text = SnapshotEncoder()
        text.append(bytes: [0xFF, 0xFE])
        var invalid = SnapshotDecoder(text.bytes, context: "test")
        #expect(throws: SnapshotError.self) { try invalid.readString() }
        var trailing = SnapshotDecoder([1, 2], context: "test")
        _ = try trailing.read(UInt8.self)
        #expect(throws: SnapshotError.self) { try trailing.expectEnd() }

        // Two sections of one name.
        var archive = SnapshotArchive(producer: "test")
        archive.add("vm", version: 1) { $0.append(UInt8(1)) }
        archive.add("vm", version: 1) { $0.append(UInt8(2)) }
        #expect(throws: SnapshotError.self) { try SnapshotArchive(decoding: archive.encoded()) }
    }
}

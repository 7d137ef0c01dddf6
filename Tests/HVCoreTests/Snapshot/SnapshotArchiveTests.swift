import Testing
@testable import HVCore

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

    /// A flipped bit anywhere in the file is refused: in the magic as not a snapshot, in the
    /// version as a version this HVKit does not read, anywhere else by the checksum.
    @Test func aFlippedBitAnywhereIsRefused() throws {
        let bytes = Self.sample().encoded()
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

    @Test func aFileCutAnywhereIsRefused() throws {
        let bytes = Self.sample().encoded()
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
        // Major version 2, written with a valid checksum as a future HVKit would.
        bytes.removeLast(8)
        bytes[8] = 2
        var encoder = SnapshotEncoder()
        encoder.append(CRC64.checksum(bytes))
        #expect(throws: SnapshotError.unsupportedVersion(major: 2, minor: 0, readable: 1...1)) {
            try SnapshotArchive(decoding: bytes + encoder.bytes)
        }
        #expect("\(SnapshotError.unsupportedVersion(major: 2, minor: 0, readable: 1...1))".contains("2.0"))
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

@testable import HVBoot
import HVCore
import HVTestSupport
import Testing

/// Builds small ELF64 executables byte by byte, so each test can break one field.
struct ELFBuilder {
    struct Segment {
        var type: UInt32 = 1
        var flags: UInt32 = 5  // R X
        var offset: UInt64
        var address: UInt64
        var fileSize: UInt64
        var memorySize: UInt64
        var alignment: UInt64 = 0
    }

    var entry: UInt64 = 0x100000
    var type: UInt16 = 2
    var machine: UInt16 = 62
    var phentsize: UInt16 = 56
    var segments: [Segment] = [Segment(offset: 0x100, address: 0x100000, fileSize: 16, memorySize: 32)]
    var payload: [UInt8] = Array(1...16)
    var truncateTo: Int?
    /// Where the payload starts; the program headers must fit before it.
    var headerArea = 0x100

    var bytes: [UInt8] {
        var file = [UInt8](repeating: 0, count: headerArea)
        file.replaceSubrange(0..<4, with: [0x7F, 0x45, 0x4C, 0x46])
        file[4] = 2; file[5] = 1; file[6] = 1
        func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
            for index in 0..<MemoryLayout<T>.size { file[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
        }
        put(type, at: 16); put(machine, at: 18); put(UInt32(1), at: 20); put(entry, at: 24)
        put(UInt64(64), at: 32); put(UInt16(64), at: 52); put(phentsize, at: 54); put(UInt16(segments.count), at: 56)
        for (index, segment) in segments.enumerated() {
            let base = 64 + index * 56
            put(segment.type, at: base); put(segment.flags, at: base + 4); put(segment.offset, at: base + 8)
            put(segment.address, at: base + 16); put(segment.address, at: base + 24)
            put(segment.fileSize, at: base + 32); put(segment.memorySize, at: base + 40); put(segment.alignment, at: base + 48)
        }
        file += payload
        if let truncateTo { file = Array(file.prefix(truncateTo)) }
        return file
    }
}

@Suite struct ELF64ImageTests {
    @Test func loadsSegmentsAndZeroesTheRest() throws {
        let memory = try GuestMemoryMmap(size: 2 << 20)
        try memory.fill(0xEE, at: GuestAddress(0x100000), length: 64)
        let image = try ELF64Image(bytes: ELFBuilder().bytes)
        #expect(image.entry == GuestAddress(0x100000))
        #expect(image.segments.count == 1)
        #expect(image.loadedRange == (try GuestAddressRange(start: GuestAddress(0x100000), length: 32)))
        try image.load(into: memory)
        #expect(try memory.readBytes(at: GuestAddress(0x100000), count: 33) == Array(1...16) + [UInt8](repeating: 0, count: 16) + [0xEE])
    }

    @Test(arguments: [
        (ELFBuilder(truncateTo: 10), "needs 64 bytes"),
        ({ var b = ELFBuilder(); b.payload = []; b.truncateTo = 0x20; return b }(), "ELF header"),
        (ELFBuilder(type: 3), "e_type is 3"),
        (ELFBuilder(machine: 183), "e_machine is 183"),
        (ELFBuilder(phentsize: 32), "e_phentsize is 32"),
        (ELFBuilder(segments: []), "e_phnum is 0"),
        (ELFBuilder(truncateTo: 0x100 + 8), "program header 0's contents"),
        (ELFBuilder(segments: [.init(offset: 0x100, address: 0x100000, fileSize: 64, memorySize: 32)]), "p_filesz larger"),
        (ELFBuilder(segments: [.init(offset: UInt64.max - 4, address: 0x100000, fileSize: 16, memorySize: 32)]), "overflows"),
        (ELFBuilder(segments: [.init(offset: 0x100, address: UInt64.max - 8, fileSize: 16, memorySize: 32)]), "overflows"),
        (ELFBuilder(segments: [.init(offset: 0x100, address: 0x100000, fileSize: 16, memorySize: 32),
                               .init(offset: 0x100, address: 0x100010, fileSize: 16, memorySize: 32)]), "overlapping"),
        (ELFBuilder(segments: [.init(type: 4, offset: 0x100, address: 0x100000, fileSize: 16, memorySize: 32)]), "no PT_LOAD"),
        (ELFBuilder(entry: 0x200000), "e_entry 0x200000"),
        (ELFBuilder(segments: [.init(flags: 6, offset: 0x100, address: 0x100000, fileSize: 16, memorySize: 32)]), "e_entry"),
    ] as [(ELFBuilder, String)])
    func refusesHostileImages(builder: ELFBuilder, mentions: String) {
        do {
            _ = try ELF64Image(bytes: builder.bytes)
            Issue.record("accepted an image that should fail with \(mentions)")
        } catch {
            #expect(error.description.contains(mentions), "\(error)")
        }
    }

    @Test(arguments: [(0, "bad magic"), (4, "EI_CLASS"), (5, "EI_DATA"), (6, "version")] as [(Int, String)])
    func refusesBadIdentification(byte: Int, mentions: String) {
        var bytes = ELFBuilder().bytes
        bytes[byte] = 9
        #expect(throws: ELFError.self) { try ELF64Image(bytes: bytes) }
        #expect((try? ELF64Image(bytes: bytes)) == nil)
        do { _ = try ELF64Image(bytes: bytes) } catch { #expect(error.description.contains(mentions), "\(error)") }
    }

    @Test(arguments: [0x1F_FFF0, 0x20_0000, UInt64(0xFFFF_FFFF_0000)] as [UInt64])
    func refusesSegmentsOutsideRAMWithoutWritingAnything(address: UInt64) throws {
        let memory = try GuestMemoryMmap(size: 2 << 20)
        var builder = ELFBuilder(entry: address)
        builder.segments = [
            .init(offset: 0x100, address: 0x100000, fileSize: 16, memorySize: 16),
            .init(offset: 0x100, address: address, fileSize: 16, memorySize: 32),
        ]
        let image = try ELF64Image(bytes: builder.bytes)
        #expect(throws: ELFError.self) { try image.load(into: memory) }
        #expect(try memory.readBytes(at: GuestAddress(0x100000), count: 16) == [UInt8](repeating: 0, count: 16))
    }

    @Test func refusesSegmentsIntoReadOnlyMemory() throws {
        let memory = try GuestMemoryMmap([MemoryRegionSpec(start: GuestAddress(0x100000), size: 1 << 20, options: [.readOnly])])
        #expect(throws: ELFError.self) { try ELF64Image(bytes: ELFBuilder().bytes).load(into: memory) }
    }

    @Test func aMissingFileSaysWhich() {
        do {
            _ = try ELF64Image(contentsOf: "/nonexistent/guest.elf")
            Issue.record("opened a missing file")
        } catch {
            #expect(error == .io(path: "/nonexistent/guest.elf", .noSuchFileOrDirectory))
        }
    }

    @Test func randomBytesNeverCrashTheParser() {
        var generator = SystemRandomNumberGenerator()
        let valid = ELFBuilder().bytes
        for _ in 0..<2000 {
            var bytes = valid
            for _ in 0..<4 { bytes[Int.random(in: 0..<bytes.count, using: &generator)] = UInt8.random(in: 0...255, using: &generator) }
            if let image = try? ELF64Image(bytes: bytes), let memory = try? GuestMemoryMmap(size: 2 << 20) {
                try? image.load(into: memory)
            }
        }
    }
}

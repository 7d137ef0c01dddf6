import Glibc
import SystemPackage
import Testing
@testable import HVCore

/// A layout with a hole: RAM at [0, 1 MiB) and [2 MiB, 3 MiB), a read-only region at
/// [4 MiB, 4 MiB + 64 KiB), and a region [3 MiB, 3.5 MiB) that touches the second one.
func layoutWithHoles() throws -> GuestMemoryMmap {
    try GuestMemoryMmap([
        MemoryRegionSpec(start: GuestAddress(0), size: 1 << 20),
        MemoryRegionSpec(start: GuestAddress(2 << 20), size: 1 << 20, backing: .memfd(name: "hvkit-test")),
        MemoryRegionSpec(start: GuestAddress(3 << 20), size: 512 << 10, options: [.noReserve]),
        MemoryRegionSpec(start: GuestAddress(4 << 20), size: 64 << 10, options: [.readOnly]),
    ])
}

@Suite("GuestMemoryMmap")
struct GuestMemoryMmapTests {
    @Test func roundTripsValuesInEveryRegion() throws {
        let memory = try layoutWithHoles()
        for (index, address) in [0x0, 0xFFFF8, 0x20_0000, 0x2F_FFF8, 0x30_0010].enumerated() {
            let value = 0x1122_3344_5566_7700 | UInt64(index)
            try memory.write(value, at: GuestAddress(UInt64(address)))
            #expect(try memory.read(UInt64.self, at: GuestAddress(UInt64(address))) == value)
        }
        #expect(memory.ramSize == (1 << 20) + (1 << 20) + (512 << 10) + (64 << 10))
        #expect(memory.ramRanges.count == 4)
    }

    /// Each mapping has an identity of its own, never given to another, even one made where a
    /// freed one was: translations made through one can be told from another's.
    @Test func eachMappingHasItsOwnIdentity() throws {
        let memory = try layoutWithHoles()
        let other = try layoutWithHoles()
        let identity = try #require(memory.hostMappingIdentity)
        #expect(identity != other.hostMappingIdentity)
        #expect((memory as any GuestMemory).hostMappingIdentity == identity)
        var seen: Set<HostMappingIdentity> = [identity]
        for _ in 0..<20 {
            // Made and freed in turn, so the allocator may well hand out the same object address.
            let next = try #require(try GuestMemoryMmap(size: 1 << 20).hostMappingIdentity)
            #expect(seen.insert(next).inserted, "\(next) was given before")
        }
    }

    /// Zeroing gives whole private anonymous pages back (they leave the resident set) and
    /// stores the partial pages at the ends; shared (memfd) pages are stored to. Nothing outside
    /// the range changes, in either kind of region, and a range across two adjacent regions
    /// is zeroed in both.
    @Test(arguments: [(UInt64(0x64), UInt64(0xF_0000)), (0x1000, 0x8000), (0x20_0123, 0xE_0000), (0x2F_F000, 0x2_0000), (0x5, 0x7)])
    func zeroFillsExactlyItsRange(start: UInt64, length: UInt64) throws {
        let memory = try layoutWithHoles()
        let touched: [(UInt64, UInt64)] = [(0, 1 << 20), (2 << 20, 1 << 20), (3 << 20, 512 << 10)]
        for (base, size) in touched { try memory.fill(0xAB, at: GuestAddress(base), length: size) }
        let residentBefore = try memory.residentBytes()
        try memory.fill(0, at: GuestAddress(start), length: length)
        // Measured before reading back, which maps the (zero) pages in again.
        let residentAfter = try memory.residentBytes()
        for (base, size) in touched {
            let bytes = try memory.readBytes(at: GuestAddress(base), count: Int(size))
            for (offset, byte) in bytes.enumerated() {
                let address = base + UInt64(offset)
                let expected: UInt8 = (start..<(start + length)).contains(address) ? 0 : 0xAB
                guard byte == expected else {
                    Issue.record("byte at 0x\(String(address, radix: 16)) is \(byte), expected \(expected)")
                    return
                }
            }
        }
        // The private region's whole pages inside the range are no longer resident.
        let privateEnd = min(start + length, 1 << 20)
        let wholePages = start < privateEnd ? ((privateEnd & ~0xFFF) > ((start + 0xFFF) & ~0xFFF) ? ((privateEnd & ~0xFFF) - ((start + 0xFFF) & ~0xFFF)) : 0) : 0
        let dropped = residentBefore - residentAfter
        if wholePages >= 4 * 4096 && length >= 4 * 4096 {
            #expect(dropped >= wholePages, "\(dropped) bytes left the resident set, \(wholePages) expected")
        }
    }

    @Test func residentBytesCountsTouchedPagesInEveryRegion() throws {
        let page = GuestMemoryMmap.pageSize
        let memory = try GuestMemoryMmap([
            MemoryRegionSpec(start: GuestAddress(0), size: 4 << 20, options: [.noReserve]),
            MemoryRegionSpec(start: GuestAddress(8 << 20), size: 4 << 20, options: [.noReserve]),
        ])
        #expect(try memory.residentBytes() == 0)
        try memory.write(UInt8(1), at: GuestAddress(0))
        try memory.write(UInt8(1), at: GuestAddress(8 << 20))
        try memory.write(UInt8(1), at: GuestAddress((12 << 20) - 1))
        // At least the three pages written; transparent huge pages may bring in more, never
        // beyond the regions.
        let resident = try memory.residentBytes()
        #expect(resident >= 3 * page)
        #expect(resident <= 8 << 20)
    }

    @Test func byteBuffersSpanTouchingRegions() throws {
        let memory = try layoutWithHoles()
        // [3 MiB - 8, 3 MiB + 8) spans the memfd region and the next one, with no hole.
        let start = GuestAddress((3 << 20) - 8)
        let bytes = (0..<16).map { UInt8($0 * 3) }
        try memory.write(bytes, to: start)
        #expect(try memory.readBytes(at: start, count: 16) == bytes)
        // A typed read across the same boundary sees bytes 4..<12 of the pattern.
        #expect(try memory.read(UInt64.self, at: GuestAddress((3 << 20) - 4)) == 0x211E_1B18_1512_0F0C as UInt64)
        #expect(memory.isRAM(start, length: 16))
        // A single host buffer cannot span them.
        #expect(throws: GuestMemoryError.crossesRegionBoundary(address: start, length: 16)) {
            try memory.unsafeHostBuffer(at: start, length: 16, for: .read)
        }
    }

    @Test("hostile ranges are refused with the address and length named", arguments: [
        // (address, length, expected error)
        (UInt64.max - 3, UInt64(8), GuestMemoryError.addressOverflow(address: GuestAddress(UInt64.max - 3), length: 8)),
        (UInt64(0x10), UInt64.max, GuestMemoryError.addressOverflow(address: GuestAddress(0x10), length: UInt64.max)),
        (UInt64(0x10), UInt64(0), GuestMemoryError.zeroLength(address: GuestAddress(0x10))),
        (UInt64(0xFFFF0), UInt64(0x20), GuestMemoryError.crossesHole(address: GuestAddress(0xFFFF0), length: 0x20)),
        (UInt64(0x10_0000), UInt64(8), GuestMemoryError.outOfBounds(address: GuestAddress(0x10_0000), length: 8)),
        (UInt64(0x1F_FFFF), UInt64(2), GuestMemoryError.outOfBounds(address: GuestAddress(0x1F_FFFF), length: 2)),
        (UInt64(0x37_FFFC), UInt64(8), GuestMemoryError.crossesHole(address: GuestAddress(0x37_FFFC), length: 8)),
        (UInt64(0x41_0000), UInt64(1), GuestMemoryError.outOfBounds(address: GuestAddress(0x41_0000), length: 1)),
        (UInt64(1) << 40, UInt64(4096), GuestMemoryError.outOfBounds(address: GuestAddress(1 << 40), length: 4096)),
    ])
    func hostileRanges(address: UInt64, length: UInt64, expected: GuestMemoryError) throws {
        let memory = try layoutWithHoles()
        #expect(throws: expected) { try memory.unsafeHostBuffer(at: GuestAddress(address), length: length, for: .read) }
        if length > 0, length <= 64 {
            #expect(throws: expected) { try memory.readBytes(at: GuestAddress(address), count: Int(length)) }
            #expect(throws: expected) { try memory.write([UInt8](repeating: 0xAA, count: Int(length)), to: GuestAddress(address)) }
        }
        #expect(throws: expected) { try memory.fill(0, at: GuestAddress(address), length: length) }
        #expect(!memory.isRAM(GuestAddress(address), length: length))
    }

    @Test("a write that would cross a hole changes nothing, not even the part inside RAM")
    func failedWriteIsAtomicWithRespectToBounds() throws {
        let memory = try layoutWithHoles()
        let start = GuestAddress(0xFFFF8)
        try memory.write(UInt64(0x0123_4567_89AB_CDEF), at: start)
        #expect(throws: GuestMemoryError.self) { try memory.write([UInt8](repeating: 0xFF, count: 16), to: start) }
        #expect(try memory.read(UInt64.self, at: start) == 0x0123_4567_89AB_CDEF)
    }

    @Test func typedReadsAtEndOfSpaceDoNotTrap() throws {
        let memory = try layoutWithHoles()
        #expect(throws: GuestMemoryError.self) { try memory.read(UInt64.self, at: GuestAddress(UInt64.max)) }
        #expect(throws: GuestMemoryError.self) { try memory.read(UInt32.self, at: GuestAddress(UInt64.max - 2)) }
        #expect(throws: GuestMemoryError.self) { try memory.write(UInt16(1), at: GuestAddress(UInt64.max)) }
    }

    @Test func readOnlyRegionRefusesWrites() throws {
        let memory = try layoutWithHoles()
        let address = GuestAddress(4 << 20)
        #expect(try memory.read(UInt32.self, at: address) == 0)
        #expect(throws: GuestMemoryError.readOnly(address: address, length: 4)) { try memory.write(UInt32(1), at: address) }
        #expect(throws: GuestMemoryError.readOnly(address: address, length: 2)) { try memory.storeRelease(UInt16(1), at: address) }
    }

    @Test func atomicsRoundTripAndRefuseMisalignment() throws {
        let memory = try layoutWithHoles()
        try memory.storeRelease(UInt16(0xBEEF), at: GuestAddress(0x100))
        try memory.storeRelease(UInt32(0xDEAD_BEEF), at: GuestAddress(0x104))
        try memory.storeRelease(UInt64(0x0102_0304_0506_0708), at: GuestAddress(0x108))
        #expect(try memory.loadAcquire(UInt16.self, at: GuestAddress(0x100)) == 0xBEEF)
        #expect(try memory.loadAcquire(UInt32.self, at: GuestAddress(0x104)) == 0xDEAD_BEEF)
        #expect(try memory.loadAcquire(UInt64.self, at: GuestAddress(0x108)) == 0x0102_0304_0506_0708)
        #expect(throws: GuestMemoryError.misaligned(address: GuestAddress(0x101), alignment: 2)) {
            try memory.loadAcquire(UInt16.self, at: GuestAddress(0x101))
        }
        #expect(throws: GuestMemoryError.misaligned(address: GuestAddress(0x106), alignment: 4)) {
            try memory.storeRelease(UInt32(1), at: GuestAddress(0x106))
        }
        #expect(throws: GuestMemoryError.misaligned(address: GuestAddress(0x10C), alignment: 8)) {
            try memory.loadAcquire(UInt64.self, at: GuestAddress(0x10C))
        }
        #expect(throws: GuestMemoryError.outOfBounds(address: GuestAddress(0x10_0000), length: 8)) {
            try memory.loadAcquire(UInt64.self, at: GuestAddress(0x10_0000))
        }
        #expect(throws: GuestMemoryError.outOfBounds(address: GuestAddress(UInt64.max - 7), length: 8)) {
            try memory.loadAcquire(UInt64.self, at: GuestAddress(UInt64.max - 7))
        }
    }

    @Test("layout errors", arguments: [
        ([MemoryRegionSpec](), MemoryMappingError.emptyLayout),
        ([MemoryRegionSpec(start: GuestAddress(0), size: 0)], MemoryMappingError.zeroSize(start: GuestAddress(0))),
        ([MemoryRegionSpec(start: GuestAddress(0x800), size: 0x1000)],
         MemoryMappingError.unaligned(start: GuestAddress(0x800), size: 0x1000, pageSize: 4096)),
        ([MemoryRegionSpec(start: GuestAddress(UInt64.max - 0xFFF), size: 0x2000)],
         MemoryMappingError.overflow(start: GuestAddress(UInt64.max - 0xFFF), size: 0x2000)),
    ])
    func layoutErrors(layout: [MemoryRegionSpec], expected: MemoryMappingError) {
        #expect(throws: expected) { try GuestMemoryMmap(layout) }
    }

    @Test func overlappingRegionsAreRefused() throws {
        let layout = [MemoryRegionSpec(start: GuestAddress(0), size: 0x2000),
                      MemoryRegionSpec(start: GuestAddress(0x1000), size: 0x1000)]
        #expect(throws: MemoryMappingError.self) { try GuestMemoryMmap(layout) }
    }

    @Test func fileBackedRegionWritesReachTheFile() throws {
        var template = Array("/tmp/hvkit-memory-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        try #require(fd >= 0)
        let path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { close(fd); unlink(path) }
        #expect(ftruncate(fd, 0x2000) == 0)
        do {
            let memory = try GuestMemoryMmap([MemoryRegionSpec(start: GuestAddress(0x10000), size: 0x1000,
                                                               backing: .file(FileDescriptor(rawValue: fd), offset: 0x1000))])
            try memory.write(Array("guest data".utf8), to: GuestAddress(0x10010))
        }
        var buffer = [UInt8](repeating: 0, count: 10)
        #expect(pread(fd, &buffer, 10, 0x1010) == 10)
        #expect(String(decoding: buffer, as: UTF8.self) == "guest data")
    }

    @Test func memfdRegionExposesItsDescriptor() throws {
        let memory = try layoutWithHoles()
        let region = try #require(memory.region(containing: GuestAddress(0x20_1000)))
        let fd = try #require(region.fileDescriptor)
        try memory.write(UInt32(0xCAFE_F00D), at: GuestAddress(0x20_0040))
        var value: UInt32 = 0
        #expect(pread(fd.rawValue, &value, 4, 0x40) == 4)
        #expect(value == 0xCAFE_F00D)
    }

    @Test("huge pages are used when the host has them, and refused clearly when not")
    func hugePages() {
        do {
            let memory = try GuestMemoryMmap([MemoryRegionSpec(start: GuestAddress(0), size: 2 << 20, options: [.hugePages])])
            #expect(memory.regions[0].options.contains(.hugePages))
        } catch let error {
            // No reserved huge pages on this host: the error must say mmap failed and why.
            guard case let .systemCall(call, _, _, _) = error else {
                Issue.record("unexpected error \(error)")
                return
            }
            #expect(call == "mmap")
        }
        // Transparent huge pages are best effort and always succeed.
        #expect((try? GuestMemoryMmap([MemoryRegionSpec(start: GuestAddress(0), size: 4 << 20, options: [.transparentHugePages])])) != nil)
    }
}

import Testing
@testable import HVCore

@Suite("GuestAddress and GuestAddressRange")
struct GuestAddressTests {
    @Test("checkedAdd reports overflow instead of trapping", arguments: [
        (UInt64.max, UInt64(1)), (UInt64.max - 7, UInt64(8)), (UInt64(1) << 63, UInt64(1) << 63),
    ])
    func checkedAddOverflow(base: UInt64, offset: UInt64) {
        #expect(throws: GuestMemoryError.addressOverflow(address: GuestAddress(base), length: offset)) {
            try GuestAddress(base).checkedAdd(offset)
        }
        #expect(GuestAddress(base).adding(offset) == nil)
    }

    @Test func checkedAddInRange() throws {
        #expect(try GuestAddress(0x1000).checkedAdd(0x234) == GuestAddress(0x1234))
        #expect(try GuestAddress(UInt64.max - 1).checkedAdd(1) == GuestAddress(UInt64.max))
    }

    @Test func offsetFromBase() {
        #expect(GuestAddress(0x1234).offset(from: GuestAddress(0x1000)) == 0x234)
        #expect(GuestAddress(0x0FFF).offset(from: GuestAddress(0x1000)) == nil)
    }

    @Test func rangeRefusesZeroLength() {
        #expect(throws: GuestMemoryError.zeroLength(address: GuestAddress(0x10))) {
            try GuestAddressRange(start: GuestAddress(0x10), length: 0)
        }
    }

    @Test("a range may end exactly at the top of the space, not past it")
    func rangeAtTopOfSpace() throws {
        let top = try GuestAddressRange(start: GuestAddress(UInt64.max - 15), length: 16)
        #expect(top.lastAddress == GuestAddress(UInt64.max))
        #expect(top.end == nil)
        #expect(throws: GuestMemoryError.self) { try GuestAddressRange(start: GuestAddress(UInt64.max - 15), length: 17) }
        #expect(throws: GuestMemoryError.self) { try GuestAddressRange(start: GuestAddress(UInt64.max), length: UInt64.max) }
    }

    @Test func containsAndOverlaps() throws {
        let a = try GuestAddressRange(start: GuestAddress(0x1000), length: 0x1000)
        let b = try GuestAddressRange(start: GuestAddress(0x1FFF), length: 2)
        let c = try GuestAddressRange(start: GuestAddress(0x2000), length: 0x10)
        #expect(a.contains(GuestAddress(0x1FFF)))
        #expect(!a.contains(GuestAddress(0x2000)))
        #expect(a.overlaps(b) && b.overlaps(c))
        #expect(!a.overlaps(c) && !c.overlaps(a))
        #expect(!a.contains(b))
        #expect(a.contains(try GuestAddressRange(start: GuestAddress(0x1800), length: 0x800)))
    }

    /// Property test: for random operands, checked arithmetic agrees with 128-bit arithmetic,
    /// and range construction succeeds exactly when the last byte fits in 64 bits.
    @Test("arithmetic agrees with 128-bit math on random inputs")
    func randomArithmetic() throws {
        var generator = SystemRandomNumberGenerator()
        let interesting: [UInt64] = [0, 1, 2, 0xFFF, 0x1000, UInt64(Int64.max), UInt64.max - 1, UInt64.max]
        for round in 0..<20_000 {
            let base = round < 64 ? interesting[round % 8] : UInt64.random(in: 0...UInt64.max, using: &generator)
            let length = round < 64 ? interesting[(round / 8) % 8] : (round % 3 == 0
                ? UInt64.random(in: 0...UInt64.max, using: &generator)
                : UInt64.random(in: 0...0x10000, using: &generator))
            let exact = UInt128(base) + UInt128(length)
            let sum = GuestAddress(base).adding(length)
            #expect((sum == nil) == (exact > UInt128(UInt64.max)))
            if let sum { #expect(UInt128(sum.rawValue) == exact) }
            let range = try? GuestAddressRange(start: GuestAddress(base), length: length)
            let fits = length > 0 && exact - 1 <= UInt128(UInt64.max)
            #expect((range != nil) == fits)
            if let range { #expect(UInt128(range.lastAddress.rawValue) == exact - 1) }
        }
    }
}

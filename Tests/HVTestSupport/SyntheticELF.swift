// A minimal ELF64 executable for tests that need a loadable guest image around a few bytes of
// code (HVKVMTests' loader tests, HVMachineTests' raw guests).

/// A minimal ELF64 executable with one PT_LOAD segment of `code` at physical `address`, and a
/// PT_NOTE segment holding `notes` when they are given.
public func syntheticELF(code: [UInt8], at address: UInt64, memorySize: UInt64? = nil, notes: [UInt8] = [], noteAlignment: UInt64 = 4) -> [UInt8] {
    let headerCount = notes.isEmpty ? 1 : 2
    let codeOffset = 0x40 + 56 * headerCount
    var image = [UInt8](repeating: 0, count: codeOffset)
    image.replaceSubrange(0..<4, with: [0x7F, 0x45, 0x4C, 0x46])
    image[4] = 2  // ELFCLASS64
    image[5] = 1  // little-endian
    image[6] = 1  // EV_CURRENT
    image.storeLittleEndian(UInt16(2), at: 0x10)  // ET_EXEC
    image.storeLittleEndian(UInt16(62), at: 0x12)  // EM_X86_64
    image.storeLittleEndian(UInt32(1), at: 0x14)
    image.storeLittleEndian(address, at: 0x18)  // e_entry
    image.storeLittleEndian(UInt64(0x40), at: 0x20)  // e_phoff
    image.storeLittleEndian(UInt16(64), at: 0x34)
    image.storeLittleEndian(UInt16(56), at: 0x36)
    image.storeLittleEndian(UInt16(headerCount), at: 0x38)
    // The program headers: the code, then the notes after it in the file.
    image.storeLittleEndian(UInt32(1), at: 0x40)  // PT_LOAD
    image.storeLittleEndian(UInt32(5), at: 0x44)  // R+X
    image.storeLittleEndian(UInt64(codeOffset), at: 0x48)  // p_offset
    image.storeLittleEndian(address, at: 0x50)  // p_vaddr
    image.storeLittleEndian(address, at: 0x58)  // p_paddr
    image.storeLittleEndian(UInt64(code.count), at: 0x60)
    image.storeLittleEndian(memorySize ?? UInt64(code.count), at: 0x68)
    image.storeLittleEndian(UInt64(0x1000), at: 0x70)
    if !notes.isEmpty {
        image.storeLittleEndian(UInt32(4), at: 0x78)  // PT_NOTE
        image.storeLittleEndian(UInt32(4), at: 0x7C)  // R
        image.storeLittleEndian(UInt64(codeOffset + code.count), at: 0x80)
        image.storeLittleEndian(UInt64(notes.count), at: 0x98)
        image.storeLittleEndian(UInt64(notes.count), at: 0xA0)
        image.storeLittleEndian(noteAlignment, at: 0xA8)
    }
    return image + code + notes
}

extension [UInt8] {
    mutating func storeLittleEndian<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        for index in 0..<(T.bitWidth / 8) {
            self[offset + index] = UInt8(truncatingIfNeeded: value >> (index * 8))
        }
    }
}

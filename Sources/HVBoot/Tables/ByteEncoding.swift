/// Little-endian fields and the byte checksum, as the boot structures (setup header, zero
/// page, MP table, ACPI tables) lay them out.
extension [UInt8] {
    /// The bytes of `value`, least significant first.
    init<T: FixedWidthInteger>(littleEndian value: T) {
        self = (0..<MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }

    /// A little-endian integer at `offset`; the caller has checked the bounds.
    func littleEndian<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size { value |= T(self[offset + index]) << (8 * index) }
        return value
    }

    mutating func setLittleEndian<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        for index in 0..<MemoryLayout<T>.size { self[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
    }
}

/// The byte that makes `bytes` sum to 0 modulo 256 when it takes the place of a zero byte
/// among them: the checksum of MP and ACPI structures.
func byteChecksum(_ bytes: some Sequence<UInt8>) -> UInt8 {
    0 &- bytes.reduce(0, &+)
}

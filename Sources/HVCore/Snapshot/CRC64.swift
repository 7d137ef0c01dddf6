/// CRC-64 with the ECMA-182 polynomial in its reflected form, as XZ uses it (CRC-64/XZ): the
/// checksum a snapshot's state carries, so that a flipped bit anywhere is refused on restore.
public struct CRC64: Sendable {
    /// The checksum of everything given so far.
    public var value: UInt64 { ~state }
    private var state: UInt64 = ~0

    /// An empty checksum.
    public init() {}

    /// The checksum of `bytes` in one call.
    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt64 {
        var crc = CRC64()
        crc.update(bytes)
        return crc.value
    }

    /// Adds `bytes` to the checksum.
    public mutating func update(_ bytes: some Sequence<UInt8>) {
        var crc = state
        for byte in bytes {
            crc = Self.table[Int(UInt8(truncatingIfNeeded: crc) ^ byte)] ^ (crc >> 8)
        }
        state = crc
    }

    private static let table: [UInt64] = (0..<256).map { index in
        var entry = UInt64(index)
        for _ in 0..<8 {
            entry = entry & 1 == 1 ? (entry >> 1) ^ 0xC96C_5795_D787_0F42 : entry >> 1
        }
        return entry
    }
}

/// The width of one bus access. Port I/O uses 1, 2 or 4 bytes; MMIO up to 8.
public enum AccessWidth: Int, Sendable, CaseIterable {
    case byte = 1
    case word = 2
    case doubleWord = 4
    case quadWord = 8

    /// The width for an access of `count` bytes, or nil for a length no bus access has.
    @inlinable
    public init?(byteCount: Int) {
        self.init(rawValue: byteCount)
    }

    /// The access's size in bytes.
    @inlinable public var byteCount: Int { rawValue }

    /// The mask that keeps the low `byteCount` bytes of a value.
    @inlinable public var mask: UInt64 { self == .quadWord ? .max : (1 << (UInt64(rawValue) * 8)) - 1 }
}

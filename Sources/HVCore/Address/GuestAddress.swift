/// A guest-physical address.
///
/// Arithmetic on guest addresses never traps: the values usually come from the guest, so an
/// overflow is reported as ``GuestMemoryError/addressOverflow(address:length:)`` instead.
public struct GuestAddress: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The address as a number.
    public var rawValue: UInt64

    /// The guest-physical address `rawValue`.
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// The guest-physical address `rawValue`.
    @inlinable public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    /// Orders addresses by their value.
    @inlinable public static func < (lhs: GuestAddress, rhs: GuestAddress) -> Bool {
        lhs.rawValue < rhs.rawValue
    }

    /// `self + offset`, or an error if the sum does not fit in 64 bits.
    @inlinable
    public func checkedAdd(_ offset: UInt64) throws(GuestMemoryError) -> GuestAddress {
        let (sum, overflow) = rawValue.addingReportingOverflow(offset)
        if overflow { throw .addressOverflow(address: self, length: offset) }
        return GuestAddress(sum)
    }

    /// `self + offset`, or nil if the sum does not fit in 64 bits.
    @inlinable
    public func adding(_ offset: UInt64) -> GuestAddress? {
        let (sum, overflow) = rawValue.addingReportingOverflow(offset)
        return overflow ? nil : GuestAddress(sum)
    }

    /// The distance from `base` up to `self`, or nil when `self` lies below `base`.
    @inlinable
    public func offset(from base: GuestAddress) -> UInt64? {
        rawValue >= base.rawValue ? rawValue - base.rawValue : nil
    }

    /// Whether the address is a multiple of `alignment`, which must be a power of two.
    @inlinable
    public func isAligned(to alignment: UInt64) -> Bool {
        alignment != 0 && rawValue & (alignment &- 1) == 0
    }

    /// The address in hexadecimal (`0xd0000000`).
    public var description: String { "0x" + String(rawValue, radix: 16) }
}

/// A non-empty, non-wrapping range of guest-physical addresses `[start, start + length)`.
///
/// Construction checks the arithmetic, so every value of this type describes a range that
/// fits in the 64-bit address space; `end` (exclusive) may be exactly 2^64, which is why it
/// is exposed as ``lastAddress`` (inclusive) instead.
public struct GuestAddressRange: Hashable, Sendable, CustomStringConvertible {
    /// The range's first address.
    public let start: GuestAddress
    /// The range's size in bytes; never zero.
    public let length: UInt64

    /// Creates `[start, start + length)`. Refuses an empty range and a range that runs past
    /// the top of the 64-bit address space.
    @inlinable
    public init(start: GuestAddress, length: UInt64) throws(GuestMemoryError) {
        guard length > 0 else { throw .zeroLength(address: start) }
        // The last byte is start + length - 1; only that must fit.
        let (_, overflow) = start.rawValue.addingReportingOverflow(length - 1)
        if overflow { throw .addressOverflow(address: start, length: length) }
        self.start = start
        self.length = length
    }

    /// The last address inside the range.
    @inlinable public var lastAddress: GuestAddress { GuestAddress(start.rawValue &+ (length &- 1)) }

    /// The first address after the range, or nil when the range ends at the top of the space.
    @inlinable public var end: GuestAddress? { start.adding(length) }

    /// Whether `address` lies inside this range.
    @inlinable
    public func contains(_ address: GuestAddress) -> Bool {
        address >= start && address <= lastAddress
    }

    /// Whether `other` lies entirely inside this range.
    @inlinable
    public func contains(_ other: GuestAddressRange) -> Bool {
        other.start >= start && other.lastAddress <= lastAddress
    }

    /// Whether the two ranges share at least one address.
    @inlinable
    public func overlaps(_ other: GuestAddressRange) -> Bool {
        start <= other.lastAddress && other.start <= lastAddress
    }

    /// The range as `[first, last]` in hexadecimal.
    public var description: String { "[\(start), \(lastAddress)]" }
}

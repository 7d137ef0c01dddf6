/// Why an access to guest memory was refused.
///
/// Every case names the guest address and length that were asked for, so a log line or a
/// device error is enough to find the offending request.
public enum GuestMemoryError: Error, Hashable, Sendable, CustomStringConvertible {
    /// `address + length` does not fit in 64 bits.
    case addressOverflow(address: GuestAddress, length: UInt64)
    /// A zero-length range was asked for; HVKit refuses it rather than guess what it means.
    case zeroLength(address: GuestAddress)
    /// The range does not start inside guest RAM.
    case outOfBounds(address: GuestAddress, length: UInt64)
    /// The range starts in RAM but runs into a hole or past the end of RAM.
    case crossesHole(address: GuestAddress, length: UInt64)
    /// The range would need to be one host buffer but spans two regions.
    case crossesRegionBoundary(address: GuestAddress, length: UInt64)
    /// An atomic access at an address that is not naturally aligned.
    case misaligned(address: GuestAddress, alignment: UInt64)
    /// A write to a region mapped read-only.
    case readOnly(address: GuestAddress, length: UInt64)
    /// A length that does not fit in the host's `Int`.
    case lengthTooLarge(address: GuestAddress, length: UInt64)

    /// What was refused and where.
    public var description: String {
        switch self {
        case let .addressOverflow(address, length):
            return "guest range at \(address) with length \(length) overflows the 64-bit address space"
        case let .zeroLength(address):
            return "zero-length guest range at \(address)"
        case let .outOfBounds(address, length):
            return "guest range at \(address) with length \(length) is not in guest RAM"
        case let .crossesHole(address, length):
            return "guest range at \(address) with length \(length) leaves guest RAM (hole or end of RAM)"
        case let .crossesRegionBoundary(address, length):
            return "guest range at \(address) with length \(length) spans two memory regions"
        case let .misaligned(address, alignment):
            return "guest address \(address) is not aligned to \(alignment) bytes"
        case let .readOnly(address, length):
            return "guest range at \(address) with length \(length) is read-only"
        case let .lengthTooLarge(address, length):
            return "guest range at \(address) has a length (\(length)) too large for the host"
        }
    }
}

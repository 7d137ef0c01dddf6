/// An x86 I/O port: port I/O is an address space of its own, 64 Ki ports wide, not
/// guest-physical memory. A port-I/O ``Bus`` takes devices at ports
/// (``Bus/register(_:port:count:)``); an MMIO bus at ``GuestAddress``es.
public struct IOPort: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    /// The port number.
    public var rawValue: UInt16

    /// Port `rawValue`.
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// Port `value`, written as a literal (`0x3F8`).
    public init(integerLiteral value: UInt16) { rawValue = value }

    /// Orders ports by number.
    public static func < (lhs: IOPort, rhs: IOPort) -> Bool { lhs.rawValue < rhs.rawValue }

    /// The port in hexadecimal (`port 0x3f8`).
    public var description: String { "port 0x" + String(rawValue, radix: 16) }
}

extension Bus {
    /// Registers `device` on this port-I/O bus for `count` ports from `port`. Refused on an MMIO
    /// bus, and where the ports overlap a device already registered.
    public func register(_ device: any BusDevice, port: IOPort, count: UInt16) throws(BusError) {
        guard space == .pio else { throw .wrongSpace(expected: .pio, bus: space) }
        try register(device, at: GuestAddress(UInt64(port.rawValue)), length: UInt64(count))
    }
}

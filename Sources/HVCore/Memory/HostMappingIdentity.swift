import Synchronization

/// Names one host mapping of guest RAM for the life of the process: a serial number given when
/// the mapping is made and never given again, even after the mapping is gone.
///
/// A host address found through one mapping may be used again wherever the same identity is
/// offered, and nowhere else (see ``GuestMemory/hostMappingIdentity``). An object's address
/// would not do: a later mapping could be made at the address of one already freed, and take
/// over translations it never made.
public struct HostMappingIdentity: Hashable, Sendable, CustomStringConvertible {
    /// The serial number, from 1 up.
    public let serial: UInt64

    private static let lastSerial = Atomic<UInt64>(0)

    /// A new identity, unlike every one made before in this process.
    public static func next() -> HostMappingIdentity {
        HostMappingIdentity(serial: lastSerial.add(1, ordering: .relaxed).newValue)
    }

    /// "host mapping #N".
    public var description: String { "host mapping #\(serial)" }
}

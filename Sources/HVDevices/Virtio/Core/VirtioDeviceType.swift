/// The virtio device ID a transport reports (virtio 1.2, section 5).
public struct VirtioDeviceType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The virtio device ID.
    public let rawValue: UInt32
    /// A device type from its ID.
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// virtio-net (1).
    public static let network = VirtioDeviceType(rawValue: 1)
    /// virtio-blk (2).
    public static let block = VirtioDeviceType(rawValue: 2)
    /// virtio-console (3).
    public static let console = VirtioDeviceType(rawValue: 3)
    /// virtio-rng, the entropy source (4).
    public static let entropy = VirtioDeviceType(rawValue: 4)
    /// virtio-vsock (19).
    public static let vsock = VirtioDeviceType(rawValue: 19)

    /// The type's short name ("block").
    public var description: String {
        switch self {
        case .network: "net"
        case .block: "block"
        case .console: "console"
        case .entropy: "rng"
        case .vsock: "vsock"
        default: "type \(rawValue)"
        }
    }
}

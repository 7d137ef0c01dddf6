/// The virtio device ID a transport reports (virtio 1.2, section 5).
public struct VirtioDeviceType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let network = VirtioDeviceType(rawValue: 1)
    public static let block = VirtioDeviceType(rawValue: 2)
    public static let console = VirtioDeviceType(rawValue: 3)
    public static let entropy = VirtioDeviceType(rawValue: 4)
    public static let vsock = VirtioDeviceType(rawValue: 19)

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

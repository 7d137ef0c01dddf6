import HVCore
import HVDevices

/// A virtio-net interface as a ``Machine`` added it: the backend, the device, and its slot.
public final class MachineNetwork: Sendable {
    /// The device model.
    public let device: NetDevice
    /// Where the machine placed it.
    public let slot: VirtioSlot

    init(device: NetDevice, slot: VirtioSlot) {
        self.device = device
        self.slot = slot
    }

    /// The machine's name for the interface.
    public var name: String { slot.name }
    /// The guest's MAC address.
    public var mac: [UInt8] { device.netConfiguration.mac }
    /// Where its frames go ("tap hv0").
    public var backendName: String { device.backend.name }
}

/// A MAC address, written as six hexadecimal bytes with colons ("52:54:00:12:34:56").
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    /// The six bytes.
    public let bytes: [UInt8]

    /// The address `bytes` (exactly six).
    public init?(bytes: [UInt8]) {
        guard bytes.count == 6 else { return nil }
        self.bytes = bytes
    }

    private init(checked bytes: [UInt8]) {
        self.bytes = bytes
    }

    /// Parses "52:54:00:12:34:56"; nil for anything else.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard part.count == 2, let byte = UInt8(part, radix: 16) else { return nil }
            bytes.append(byte)
        }
        self.init(checked: bytes)
    }

    /// A random locally administered unicast address in QEMU's 52:54:00 range.
    public static func random() -> MACAddress {
        var tail = [UInt8](repeating: 0, count: 3)
        unsafe tail.withUnsafeMutableBytes { unsafe try? HostRandom.fill($0) }
        return MACAddress(checked: [0x52, 0x54, 0x00] + tail)
    }

    /// "52:54:00:12:34:56".
    public var description: String {
        bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }
}

extension Machine {
    /// Adds a virtio-net interface whose frames go through `backend` (a `TapBackend`, a
    /// `StreamNetBackend`, one end of a `PairedNetBackend` pair, or your own), served by the machine's event loop.
    /// - Parameters:
    ///   - backend: where frames go and come from.
    ///   - mac: the guest's address; default a random one in 52:54:00.
    ///   - mtu: the largest payload the guest should send.
    ///   - receiveRateLimit: limits what the guest receives (Firecracker's token buckets); a
    ///     frame without tokens waits, and the backend holds what comes after it.
    ///   - transmitRateLimit: limits what the guest sends; a frame without tokens waits, in
    ///     order, and is never dropped.
    ///   - name: how errors and reports name it; default "netN".
    @discardableResult
    public func addNetwork(backend: any NetBackend, mac: MACAddress = .random(), mtu: UInt16 = 1500,
                           receiveRateLimit: RateLimit? = nil, transmitRateLimit: RateLimit? = nil,
                           name: String? = nil) throws(MachineError) -> MachineNetwork {
        let label = "virtio-net " + (name ?? "net\(networks.count)")
        let device = try during(.addDevice, device: label) {
            try NetDevice(backend: backend, mac: mac.bytes, mtu: mtu, eventLoop: events,
                          receiveRateLimit: receiveRateLimit.map { RateLimiter($0) },
                          transmitRateLimit: transmitRateLimit.map { RateLimiter($0) })
        }
        let slot = try add(virtio: device, name: label)
        let network = MachineNetwork(device: device, slot: slot)
        state.withLock { $0.networks.append(network) }
        return network
    }

    /// Adds a virtio-net interface on the host's tap interface `tap` (created if it does not
    /// exist, and then gone with the machine). Needs CAP_NET_ADMIN, or a persistent tap the
    /// user owns (`ip tuntap add NAME mode tap user USER`).
    @discardableResult
    public func addNetwork(tap: String, mac: MACAddress = .random(), mtu: UInt16 = 1500,
                           receiveRateLimit: RateLimit? = nil, transmitRateLimit: RateLimit? = nil,
                           name: String? = nil) throws(MachineError) -> MachineNetwork {
        let backend = try during(.openNetwork, device: "virtio-net tap \(tap)") { try TapBackend(name: tap) }
        return try addNetwork(backend: backend, mac: mac, mtu: mtu, receiveRateLimit: receiveRateLimit,
                              transmitRateLimit: transmitRateLimit, name: name)
    }

    /// Adds a virtio-net interface on the Unix stream socket at `path`, which speaks QEMU's
    /// `-netdev stream` framing: start `passt --socket PATH` and the guest has the host's
    /// network without privileges (passt gives it the host's address and answers DHCP).
    @discardableResult
    public func addNetwork(stream path: String, mac: MACAddress = .random(), mtu: UInt16 = 1500,
                           receiveRateLimit: RateLimit? = nil, transmitRateLimit: RateLimit? = nil,
                           name: String? = nil) throws(MachineError) -> MachineNetwork {
        let backend = try during(.openNetwork, device: "virtio-net stream \(path)") { try StreamNetBackend(path: path) }
        return try addNetwork(backend: backend, mac: mac, mtu: mtu, receiveRateLimit: receiveRateLimit,
                              transmitRateLimit: transmitRateLimit, name: name)
    }
}

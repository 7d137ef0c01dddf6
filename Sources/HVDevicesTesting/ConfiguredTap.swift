import Glibc
import HVCore
import HVDevices
import SystemPackage

/// A new tap interface with the host at `10.199.N.1/24`, up, for tests and benchmarks of
/// network devices: the guest side (a test driver or a guest) plays `10.199.N.2`. It goes away
/// with its ``backend``. Configured with iproute2's `ip`, so it needs root and `ip`.
public final class ConfiguredTap: Sendable {
    /// The tap, as a virtio-net backend.
    public let backend: TapBackend
    /// The third byte of the /24.
    public let subnet: UInt8
    /// The host side's MAC address (the tap interface's own).
    public let hostMAC: [UInt8]

    /// Why a tap cannot be configured here (not root, no /dev/net/tun, no `ip`), or nil.
    public static var unavailableReason: String? {
        guard unsafe access("/usr/sbin/ip", X_OK) == 0 || access("/sbin/ip", X_OK) == 0 else { return "needs iproute2's ip" }
        do {
            _ = try TapBackend()
            return nil
        } catch {
            return "needs a tap device (root, /dev/net/tun): \(error)"
        }
    }

    /// Creates the tap and gives the host its address. `guestMAC`, when given, becomes a
    /// static neighbour entry for `10.199.N.2`, so the host sends to a driver that answers no
    /// ARP.
    public init(guestMAC: [UInt8]? = nil) throws {
        backend = try TapBackend()
        let name = backend.interfaceName
        // A subnet per process and tap, so parallel tests do not share routes.
        subnet = UInt8(truncatingIfNeeded: (Int(getpid()) &* 31 &+ Int(backend.fileDescriptor.rawValue)) % 200 + 20)
        var commands = ["ip addr add 10.199.\(subnet).1/24 dev \(name)", "ip link set \(name) up"]
        if let guestMAC {
            let mac = guestMAC.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
            commands.append("ip neigh replace 10.199.\(subnet).2 lladdr \(mac) dev \(name)")
        }
        for command in commands where unsafe system(command + " >/dev/null 2>&1") != 0 {
            throw ConfiguredTapError(command: command)
        }
        let address = try HostFile.readAll(FilePath("/sys/class/net/\(name)/address"))
        hostMAC = String(decoding: address, as: UTF8.self).split(separator: ":").compactMap { UInt8($0.prefix(2), radix: 16) }
    }

    /// The host's address, 10.199.N.1.
    public var hostAddress: [UInt8] { [10, 199, subnet, 1] }
    /// The guest's address, 10.199.N.2.
    public var guestAddress: [UInt8] { [10, 199, subnet, 2] }
    /// An address in dotted form.
    public static func dotted(_ address: [UInt8]) -> String { address.map(String.init).joined(separator: ".") }

    /// The bytes the host received from the tap so far (the interface's rx_bytes).
    public var hostReceivedBytes: UInt64 {
        get throws {
            let text = try HostFile.readAll(FilePath("/sys/class/net/\(backend.interfaceName)/statistics/rx_bytes"))
            return UInt64(String(decoding: text, as: UTF8.self).filter(\.isNumber)) ?? 0
        }
    }
}

/// An `ip` command that failed while configuring a tap.
public struct ConfiguredTapError: Error, CustomStringConvertible {
    /// The command.
    public let command: String
    /// What failed.
    public var description: String { "'\(command)' failed" }
}

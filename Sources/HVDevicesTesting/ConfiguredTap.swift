import CHVDevicesShims
import Glibc
import HVCore
import HVDevices
import Synchronization
import SystemPackage

/// A new tap interface in a network namespace of its own, with the host side at
/// `10.199.N.1/24`, up, for tests and benchmarks of network devices: the guest side (a test
/// driver or a guest) plays `10.199.N.2`.
///
/// The process opens the tap, then the interface moves into a new namespace (`ip netns`), where
/// it gets its address; the descriptor keeps working, so the device sees no difference. The
/// host's own interfaces, routes and neighbour tables are never touched, and tests running side
/// by side cannot collide. Host-side sockets that talk to the guest are made in the namespace
/// with ``socket(_:_:_:)``. The namespace goes away with this value, and the tap with its
/// ``backend``. Configured with iproute2's `ip`, so it needs root and `ip`.
public final class ConfiguredTap: Sendable {
    /// The tap, as a virtio-net backend.
    public let backend: TapBackend
    /// The third byte of the /24.
    public let subnet: UInt8
    /// The host side's MAC address (the tap interface's own).
    public let hostMAC: [UInt8]
    /// The network namespace the interface lives in (`ip netns` name).
    public let namespace: String

    /// Namespaces made so far by this process.
    private static let namespaces = Atomic<Int>(0)

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

    /// Creates the tap and its namespace and gives the host side its address. `guestMAC`, when
    /// given, becomes a static neighbour entry for `10.199.N.2`, so the host sends to a driver
    /// that answers no ARP.
    public init(guestMAC: [UInt8]? = nil) throws {
        backend = try TapBackend()
        let name = backend.interfaceName
        subnet = UInt8(truncatingIfNeeded: (Int(getpid()) &* 31 &+ Int(backend.fileDescriptor.rawValue)) % 200 + 20)
        // Unique in the process: once an interface moved out, the next tap may take its name.
        namespace = "hvkit-\(getpid())-\(Self.namespaces.wrappingAdd(1, ordering: .relaxed).oldValue)"
        // Read while the interface is still visible in this namespace's sysfs.
        let address = try HostFile.readAll(FilePath("/sys/class/net/\(name)/address"))
        hostMAC = String(decoding: address, as: UTF8.self).split(separator: ":").compactMap { UInt8($0.prefix(2), radix: 16) }
        var commands = [
            "ip netns add \(namespace)",
            "ip link set \(name) netns \(namespace)",
            "ip -n \(namespace) addr add 10.199.\(subnet).1/24 dev \(name)",
            "ip -n \(namespace) link set \(name) up",
            "ip -n \(namespace) link set lo up",
        ]
        if let guestMAC {
            let mac = guestMAC.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
            commands.append("ip -n \(namespace) neigh replace 10.199.\(subnet).2 lladdr \(mac) dev \(name)")
        }
        for command in commands where unsafe system(command + " >/dev/null 2>&1") != 0 {
            _ = unsafe system("ip netns del \(namespace) >/dev/null 2>&1")
            throw ConfiguredTapError(command: command)
        }
    }

    deinit {
        _ = unsafe system("ip netns del \(namespace) >/dev/null 2>&1")
    }

    /// The host's address, 10.199.N.1.
    public var hostAddress: [UInt8] { [10, 199, subnet, 1] }
    /// The guest's address, 10.199.N.2.
    public var guestAddress: [UInt8] { [10, 199, subnet, 2] }
    /// An address in dotted form.
    public static func dotted(_ address: [UInt8]) -> String { address.map(String.init).joined(separator: ".") }

    /// A socket (as `socket(2)` takes its arguments) in the tap's namespace, where the host's
    /// address is: for the host side of a test. The caller closes it.
    public func socket(_ domain: Int32, _ type: Int32, _ protocol: Int32) throws -> Int32 {
        // errno is the namespace thread's: it comes back with the result.
        let (made, error) = try inNamespace { () -> (Int32, Int32) in
            let made = Glibc.socket(domain, type, `protocol`)
            return (made, errno)
        }
        guard made >= 0 else { throw ConfiguredTapError(command: "socket in \(namespace): errno \(error)") }
        return made
    }

    /// The bytes the host received from the tap so far (the interface's rx_bytes, from the
    /// namespace's /proc/net/dev).
    public var hostReceivedBytes: UInt64 {
        get throws {
            let name = backend.interfaceName
            let text = try inNamespace { () -> [UInt8] in
                (try? HostFile.read(FilePath("/proc/thread-self/net/dev"), upTo: 1 << 20)) ?? []
            }
            // "  tapN: rx_bytes rx_packets ..."
            for line in String(decoding: text, as: UTF8.self).split(separator: "\n") {
                let parts = line.split(separator: ":", maxSplits: 1)
                guard parts.count == 2, parts[0].trimmingPrefix(while: { $0 == " " }) == name else { continue }
                return parts[1].split(separator: " ").first.flatMap { UInt64($0) } ?? 0
            }
            throw ConfiguredTapError(command: "no \(name) in \(namespace)'s /proc/net/dev")
        }
    }

    /// Runs `body` on a new thread that joined the tap's namespace (so the calling thread's
    /// own namespace never changes), and returns what it returned.
    public func inNamespace<Result: Sendable>(_ body: @escaping @Sendable () -> Result) throws -> Result {
        let descriptor = unsafe open("/var/run/netns/\(namespace)", O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw ConfiguredTapError(command: "open /var/run/netns/\(namespace): errno \(errno)") }
        defer { close(descriptor) }
        let outcome = Locked<Result?>(nil)
        let thread = try HostThread(name: "hv-netns") {
            guard hvd_enter_network_namespace(descriptor) == 0 else { return }
            let value = body()
            outcome.withLock { $0 = value }
        }
        thread.join()
        guard let result = outcome.withLock({ $0 }) else {
            throw ConfiguredTapError(command: "setns into \(namespace) failed")
        }
        return result
    }
}

/// An `ip` command (or another step) that failed while configuring a tap.
public struct ConfiguredTapError: Error, CustomStringConvertible {
    /// The command.
    public let command: String
    /// What failed.
    public var description: String { "'\(command)' failed" }
}

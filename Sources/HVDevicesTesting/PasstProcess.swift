import Glibc
import HVCore
import SystemPackage

/// A passt started in the background on a Unix socket, for tests of the stream backend and of
/// guests on it; stopped (SIGTERM) when released. passt gives its guest the address of the
/// host's default-route interface and answers for the route's gateway, which it maps to the
/// host itself (a guest's connection to the gateway reaches the host's loopback).
public final class PasstProcess: Sendable {
    /// The socket passt listens on.
    public let socketPath: String
    /// The address passt gives the guest (the host's on its default route).
    public let guestAddress: [UInt8]
    /// The gateway passt answers for.
    public let gateway: [UInt8]
    private let pidFile: String

    /// Why passt cannot be used here, or nil.
    public static var unavailableReason: String? {
        guard unsafe access("/usr/bin/passt", X_OK) == 0 else { return "needs passt (apt-get install passt)" }
        guard defaultRoute() != nil else { return "needs an IPv4 default route for passt" }
        return nil
    }

    /// Starts passt on `socketPath` (removed first if it exists).
    public init(socketPath: String) throws {
        guard let route = Self.defaultRoute(), let address = Self.address(of: route.interface) else {
            throw PasstError(reason: "no IPv4 default route or address for passt to use")
        }
        self.socketPath = socketPath
        guestAddress = address
        gateway = route.gateway
        pidFile = socketPath + ".pid"
        unsafe unlink(socketPath)
        guard unsafe system("passt --quiet --socket \(socketPath) --pid \(pidFile) >/dev/null 2>&1") == 0 else {
            throw PasstError(reason: "passt did not start")
        }
    }

    deinit {
        if let pid = try? HostFile.readAll(FilePath(pidFile)),
           let value = Int32(String(decoding: pid, as: UTF8.self).filter(\.isNumber)) {
            kill(value, SIGTERM)
        }
        unsafe unlink(socketPath)
        unsafe unlink(pidFile)
    }

    /// The default route's gateway and interface, from /proc/net/route.
    static func defaultRoute() -> (gateway: [UInt8], interface: String)? {
        guard let route = try? HostFile.readAll(FilePath("/proc/net/route")) else { return nil }
        for line in String(decoding: route, as: UTF8.self).split(separator: "\n").dropFirst() {
            let fields = line.split(whereSeparator: \.isWhitespace)
            guard fields.count > 2, fields[1] == "00000000", let gateway = UInt32(fields[2], radix: 16), gateway != 0 else { continue }
            return unsafe (withUnsafeBytes(of: gateway) { unsafe Array($0) }, String(fields[0]))
        }
        return nil
    }

    /// The IPv4 address of `interface`.
    static func address(of interface: String) -> [UInt8]? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard unsafe getifaddrs(&list) == 0 else { return nil }
        defer { unsafe freeifaddrs(list) }
        var entry = unsafe list
        while let current = unsafe entry {
            defer { unsafe entry = unsafe current.pointee.ifa_next }
            guard let socketAddress = unsafe current.pointee.ifa_addr, unsafe socketAddress.pointee.sa_family == sa_family_t(AF_INET),
                  let name = unsafe current.pointee.ifa_name, unsafe String(cString: name) == interface else { continue }
            return unsafe socketAddress.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
                unsafe withUnsafeBytes(of: pointer.pointee.sin_addr.s_addr) { unsafe Array($0) }
            }
        }
        return nil
    }
}

/// passt could not be started.
public struct PasstError: Error, CustomStringConvertible {
    /// Why.
    public let reason: String
    /// Why, in words.
    public var description: String { reason }
}

import CHVDevicesShims
import Glibc
import HVCore
import SystemPackage

/// A tap interface of the host kernel as a virtio-net backend: `/dev/net/tun` opened with
/// IFF_TAP | IFF_NO_PI | IFF_VNET_HDR and a 12-byte header, non-blocking.
///
/// The tap hands over and takes frames with their virtio-net header, so segmentation and
/// checksum offloads pass straight between the guest and the host's stack; which ones the
/// tap may hand to the guest is set with TUNSETOFFLOAD from what the guest's driver accepted
/// (``TapOffloads/init(negotiated:)``). Opening a tap needs CAP_NET_ADMIN, or a persistent tap
/// owned by the user (`ip tuntap add NAME mode tap user USER`).
public final class TapBackend: NetBackend {
    /// The interface's name, as the kernel gave it.
    public let interfaceName: String
    /// The tap's descriptor, closed with the backend.
    public let fileDescriptor: FileDescriptor
    /// Checksum, TSO over IPv4 and IPv6, ECN, and UFO where this kernel takes it.
    public let supportedOffloads: TapOffloads

    /// Attaches to the tap interface `name`, creating it if it does not exist (it goes away
    /// with the descriptor then); an empty name lets the kernel choose one ("tap0", ...).
    public init(name: String = "") throws(NetBackendError) {
        var actual = [CChar](repeating: 0, count: Int(HVD_IFNAMSIZ))
        var step: Int32 = 0
        let result = unsafe hvd_tap_open(name, &actual, Int32(NetHeader.size), &step)
        guard result >= 0 else {
            let steps = ["open /dev/net/tun", "TUNSETIFF (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)", "TUNSETVNETHDRSZ"]
            throw .setup(backend: "tap \(name)", step: steps[Int(min(max(step, 0), 2))], Errno(rawValue: -result))
        }
        fileDescriptor = FileDescriptor(rawValue: result)
        interfaceName = String(decoding: actual.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        // Kernels since 4.14 refuse TUN_F_UFO from some paths; keep it only where it is taken.
        let all: TapOffloads = [.checksum, .tso4, .tso6, .tsoECN, .ufo]
        supportedOffloads = hvd_tap_set_offload(result, all.rawValue) == 0 ? all : all.subtracting(.ufo)
        // Nothing is handed over offloaded until a driver accepts it.
        _ = hvd_tap_set_offload(result, 0)
    }

    deinit {
        close(fileDescriptor.rawValue)
    }

    /// "tap NAME".
    public var name: String { "tap \(interfaceName)" }

    /// TUNSETOFFLOAD with `offloads`.
    public func enableOffloads(_ offloads: TapOffloads) throws(NetBackendError) {
        let result = hvd_tap_set_offload(fileDescriptor.rawValue, offloads.intersection(supportedOffloads).rawValue)
        guard result == 0 else { throw .io(backend: name, operation: "TUNSETOFFLOAD", Errno(rawValue: -result)) }
    }

    /// readv of one frame.
    public func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> Int? {
        unsafe try FrameIO.receive(fileDescriptor, into: buffers, backend: name)
    }

    /// writev of one frame.
    public func transmit(_ buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> Bool {
        unsafe try FrameIO.transmit(fileDescriptor, buffers, isSocket: false, backend: name) != nil
    }
}

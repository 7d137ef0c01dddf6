import Glibc
import HVCore
import SystemPackage

/// One end of a link between two virtio-net devices in the same process: a SOCK_SEQPACKET
/// socket pair, so each frame stays one message and both ends are served by event loops like
/// a tap. For tests, and for VM-to-VM links inside one VMM.
///
/// The link carries plain frames only (no offloads): the two drivers negotiate separately, so
/// one could not be handed a frame that needs an offload only the other accepted. Each device
/// sends the header it checked, never the guest's bytes, so the other end reads a valid one.
public final class PairedNetBackend: NetBackend {
    /// This end's socket, closed with the backend.
    public let fileDescriptor: FileDescriptor
    /// "pair A" or "pair B".
    public let name: String
    /// None: plain frames only.
    public var supportedOffloads: TapOffloads { [] }

    private init(fileDescriptor: FileDescriptor, name: String) {
        self.fileDescriptor = fileDescriptor
        self.name = name
    }

    deinit {
        close(fileDescriptor.rawValue)
    }

    /// Two connected ends. A frame one end transmits is the next the other receives; when one
    /// end is gone, the other's receive reports ``NetBackendError/closed(backend:)``.
    public static func makePair() throws(NetBackendError) -> (PairedNetBackend, PairedNetBackend) {
        var descriptors: [Int32] = [-1, -1]
        let type = Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        guard unsafe socketpair(AF_UNIX, type, 0, &descriptors) == 0 else {
            throw .setup(backend: "pair", step: "socketpair", Errno(rawValue: errno))
        }
        return (PairedNetBackend(fileDescriptor: FileDescriptor(rawValue: descriptors[0]), name: "pair A"),
                PairedNetBackend(fileDescriptor: FileDescriptor(rawValue: descriptors[1]), name: "pair B"))
    }

    /// Receives one message.
    public func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> Int? {
        unsafe try FrameIO.receive(fileDescriptor, into: buffers, backend: name)
    }

    /// Sends one message (dropped when the other end's buffer is full).
    public func transmit(_ buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> Bool {
        unsafe try FrameIO.transmit(fileDescriptor, buffers, isSocket: true, backend: name) != nil
    }
}

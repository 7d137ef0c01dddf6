import Glibc
import HVCore
import SystemPackage

/// Where a virtio-net device's frames go and come from: a tap interface (``TapBackend``), the
/// other end of an in-process link (``PairedNetBackend``), or an embedder's own.
///
/// Every frame crosses the backend with the 12-byte virtio-net header (``NetHeader``) in front
/// of it, as a tap with IFF_VNET_HDR reads and writes them, so the device moves frames between
/// the backend and guest buffers with one `readv` or `writev` and no copy of its own. The
/// device serves the backend from its event loop: it watches ``fileDescriptor`` while it has
/// receive buffers to fill, and stops watching while it has none, so a frame is never read
/// without a place to put it.
public protocol NetBackend: AnyObject, Sendable {
    /// What the backend is, for logs and errors ("tap hv0").
    var name: String { get }
    /// Readable while a frame waits. The device registers it with its event loop.
    var fileDescriptor: FileDescriptor { get }
    /// The offloads the backend can take in both directions: frames with a partial checksum or
    /// segmentation offload from the guest, and the same handed to a guest that accepts them.
    /// The device offers the matching features; [] means plain, complete frames only.
    var supportedOffloads: TapOffloads { get }
    /// The driver accepted `offloads` (a subset of ``supportedOffloads``): from now on the
    /// backend may hand over frames that use them, and no others.
    func enableOffloads(_ offloads: TapOffloads) throws(NetBackendError)
    /// Reads the next frame, header first, into `buffers` in order and returns its length with
    /// the header, or nil when no frame waits. A frame longer than the buffers is cut to their
    /// total and the rest discarded, so a caller that keeps a spare byte at the end can tell.
    func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> Int?
    /// Sends one frame, header first, gathered from `buffers`. Returns false when the backend
    /// has no room for it now: the frame is dropped, as a congested link drops it.
    func transmit(_ buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> Bool
}

extension NetBackend {
    /// No offloads to enable.
    public func enableOffloads(_ offloads: TapOffloads) throws(NetBackendError) {}
}

/// Why a network backend failed.
public enum NetBackendError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Setting the backend up failed at `step` (for a tap: open, TUNSETIFF, TUNSETVNETHDRSZ).
    case setup(backend: String, step: String, Errno)
    /// A read, write or control call failed.
    case io(backend: String, operation: String, Errno)
    /// The other end went away; no frame will come again.
    case closed(backend: String)

    /// What failed and why.
    public var description: String {
        switch self {
        case let .setup(backend, step, errno): "\(backend): \(step) failed: \(errno)"
        case let .io(backend, operation, errno): "\(backend): \(operation) failed: \(errno)"
        case let .closed(backend): "\(backend): the other end closed"
        }
    }
}

/// readv and writev of whole frames on a non-blocking descriptor that keeps frame boundaries
/// (a tap, a SOCK_SEQPACKET socket): what the descriptor-backed backends share. The backend's
/// name is made only for an error: a tap's is an interpolated string, which cost a few percent
/// of the device's own time per frame when it was made for every one.
enum FrameIO {
    static func receive(
        _ descriptor: FileDescriptor, into buffers: UnsafeBufferPointer<iovec>, backend: @autoclosure () -> String
    ) throws(NetBackendError) -> Int? {
        guard let base = buffers.baseAddress else { return nil }
        while true {
            let count = unsafe readv(descriptor.rawValue, base, Int32(clamping: buffers.count))
            if count > 0 { return count }
            if count == 0 { throw .closed(backend: backend()) }
            switch errno {
            case EINTR: continue
            case EAGAIN: return nil
            case let code: throw .io(backend: backend(), operation: "readv", Errno(rawValue: code))
            }
        }
    }

    /// Writes one frame, or as much of it as the descriptor takes, and returns the bytes
    /// written, or nil when it has no room now. A socket is written with sendmsg and
    /// MSG_NOSIGNAL, because writev to a socket whose peer closed raises SIGPIPE, which would
    /// end the whole VMM.
    static func transmit(
        _ descriptor: FileDescriptor, _ buffers: UnsafeBufferPointer<iovec>, isSocket: Bool, backend: @autoclosure () -> String
    ) throws(NetBackendError) -> Int? {
        guard let base = buffers.baseAddress else { return 0 }
        var message = unsafe msghdr()
        unsafe message.msg_iov = unsafe UnsafeMutablePointer(mutating: base)
        unsafe message.msg_iovlen = buffers.count
        while true {
            let written = unsafe isSocket
                ? sendmsg(descriptor.rawValue, &message, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                : writev(descriptor.rawValue, base, Int32(clamping: buffers.count))
            if written >= 0 { return written }
            switch errno {
            case EINTR: continue
            case EAGAIN, ENOBUFS: return nil
            case EPIPE, ECONNRESET: throw .closed(backend: backend())
            case let code: throw .io(backend: backend(), operation: isSocket ? "sendmsg" : "writev", Errno(rawValue: code))
            }
        }
    }
}

/// Arithmetic on iovec lists, which a frame and its header may straddle anywhere.
enum IOVectors {
    /// The bytes `vectors` cover.
    static func totalLength(_ vectors: some Sequence<iovec>) -> Int {
        unsafe vectors.reduce(0) { unsafe $0 + $1.iov_len }
    }

    /// `vectors` without their first `count` bytes.
    static func dropping(_ count: Int, from vectors: some Sequence<iovec>) -> [iovec] {
        var skip = count
        var result: [iovec] = unsafe []
        for unsafe vector in vectors {
            if unsafe skip >= vector.iov_len {
                unsafe skip -= vector.iov_len
                continue
            }
            unsafe result.append(iovec(iov_base: vector.iov_base.map { unsafe $0 + skip }, iov_len: unsafe vector.iov_len - skip))
            skip = 0
        }
        return unsafe result
    }

    /// The first `count` bytes of `vectors`.
    static func limited(_ vectors: [iovec], to count: Int) -> [iovec] {
        var left = count
        var result: [iovec] = unsafe []
        for unsafe vector in unsafe vectors where left > 0 {
            unsafe result.append(iovec(iov_base: vector.iov_base, iov_len: min(vector.iov_len, left)))
            unsafe left -= min(vector.iov_len, left)
        }
        return unsafe result
    }

    /// The bytes of `vectors` from offset `start` on.
    static func bytes(of vectors: [iovec], from start: Int) -> [UInt8] {
        var result: [UInt8] = []
        for unsafe vector in unsafe dropping(start, from: vectors) {
            guard let base = unsafe vector.iov_base else { continue }
            unsafe result += UnsafeRawBufferPointer(start: base, count: vector.iov_len)
        }
        return result
    }

    /// Stores `byte` at `offset` into the bytes `vectors` cover; nothing if they are shorter.
    static func store(_ byte: UInt8, at offset: Int, in vectors: [iovec]) {
        var skip = offset
        for unsafe vector in unsafe vectors {
            guard unsafe skip >= vector.iov_len else {
                // SAFETY: skip < iov_len, inside the device's buffer (guest RAM it checked writable).
                unsafe vector.iov_base?.storeBytes(of: byte, toByteOffset: skip, as: UInt8.self)
                return
            }
            unsafe skip -= vector.iov_len
        }
    }

    /// Copies `bytes` into `vectors` in order, as far as they reach.
    static func copy(_ bytes: [UInt8], into vectors: [iovec]) {
        var offset = 0
        for unsafe vector in unsafe vectors where offset < bytes.count {
            guard let base = unsafe vector.iov_base else { continue }
            let count = unsafe min(vector.iov_len, bytes.count - offset)
            unsafe bytes.withUnsafeBytes { source in
                guard let start = source.baseAddress else { return }
                // SAFETY: the device's buffers (guest RAM it checked writable) or the caller's, `count` bytes at most.
                unsafe base.copyMemory(from: start + offset, byteCount: count)
            }
            offset += count
        }
    }
}

import Glibc
import HVCore
import SystemPackage

/// The host side of one vsock connection: a non-blocking stream socket (a client of the VM's
/// Unix socket, a connection to `<path>_<port>`, or one end of an in-process socket pair) and
/// what the device keeps for it.
///
/// Bytes from the guest go to the socket at once; what it does not take waits in ``toHost``,
/// which the connection's credit bounds (the guest never has more in flight than the buffer
/// the device advertised, or the connection is reset). Bytes for the guest are read from the
/// socket straight into the guest's receive buffers, only when there is a buffer and credit
/// for them, so nothing is buffered that way.
@safe struct VsockHostEndpoint {
    /// The socket, closed by ``close()``.
    let descriptor: FileDescriptor
    /// Its registration with the event loop (one-shot).
    var registration: EventLoop.Registration?
    /// What the registration is armed for now (nothing once it fired).
    var armed: EventLoop.Readiness = []
    /// Bytes from the guest that the socket has not taken yet, after the ``preamble``.
    var toHost: [UInt8] = []
    /// How many of the first bytes of ``toHost`` are the device's own (the `OK` line), not
    /// the guest's: they do not count as the guest's bytes consumed.
    var preamble = 0
    /// Whether the socket may have bytes to read: set by a readiness event, cleared by a read
    /// that found none (which arms the registration for the next).
    var mayRead = false
    /// The socket reported end of file: the host sends no more.
    var endOfFile = false
    /// The socket's write half was shut (the guest sends no more).
    var writeShut = false

    init(_ descriptor: FileDescriptor) {
        self.descriptor = descriptor
    }

    /// What became of a write.
    enum WriteResult {
        /// The socket took this many of the guest's bytes; the rest waits in ``toHost``.
        case wrote(Int)
        /// The host side is gone (EPIPE, ECONNRESET, or another error, given).
        case gone(Errno)
    }

    /// Sends `data` (guest memory) to the socket, after what already waits; keeps what the
    /// socket does not take. Returns the guest's bytes the socket took, of those that waited
    /// and of `data`.
    mutating func send(_ data: [UnsafeMutableRawBufferPointer]) -> WriteResult {
        var flushed = 0
        if !toHost.isEmpty {
            switch flush() {
            case let .wrote(count): flushed = count
            case let .gone(error): return .gone(error)
            }
        }
        let vectors = unsafe data.map { unsafe iovec(iov_base: $0.baseAddress, iov_len: $0.count) }
        var taken = 0
        if toHost.isEmpty {
            var sending = unsafe vectors
            switch unsafe Self.sendMessage(descriptor, &sending) {
            case let .wrote(count): taken = count
            case let .gone(error): return .gone(error)
            }
        }
        // SAFETY: the chain's buffers in guest RAM, valid while the caller holds the chain.
        unsafe toHost += IOVectors.bytes(of: vectors, from: taken)
        return .wrote(flushed + taken)
    }

    /// Sends what waits in ``toHost``; returns the bytes the socket took.
    mutating func flush() -> WriteResult {
        guard !toHost.isEmpty else { return .wrote(0) }
        let result = unsafe toHost.withUnsafeMutableBytes { raw -> WriteResult in
            var vectors = unsafe [iovec(iov_base: raw.baseAddress, iov_len: raw.count)]
            return unsafe Self.sendMessage(descriptor, &vectors)
        }
        guard case let .wrote(count) = result else { return result }
        toHost.removeFirst(count)
        let own = min(count, preamble)
        preamble -= own
        return .wrote(count - own)
    }

    /// What became of a read.
    enum ReadResult {
        /// This many bytes were read.
        case read(Int)
        /// Nothing waits now.
        case wouldBlock
        /// End of file: the host sends no more.
        case endOfFile
        /// The socket failed.
        case failed(Errno)
    }

    /// Reads what waits into `buffers` (guest memory), at most their size.
    mutating func receive(into buffers: [UnsafeMutableRawBufferPointer]) -> ReadResult {
        let vectors = unsafe buffers.map { unsafe iovec(iov_base: $0.baseAddress, iov_len: $0.count) }
        while true {
            let count = unsafe vectors.withUnsafeBufferPointer { unsafe readv(descriptor.rawValue, $0.baseAddress, Int32($0.count)) }
            if count > 0 { return .read(count) }
            if count == 0 {
                endOfFile = true
                mayRead = false
                return .endOfFile
            }
            switch errno {
            case EINTR: continue
            case EAGAIN:
                mayRead = false
                return .wouldBlock
            case let code:
                mayRead = false
                return .failed(Errno(rawValue: code))
            }
        }
    }

    /// Shuts the socket's write half, so the host reads end of file (the guest sends no more).
    mutating func shutWrite() {
        guard !writeShut else { return }
        writeShut = true
        _ = Glibc.shutdown(descriptor.rawValue, Int32(SHUT_WR))
    }

    /// Closes the socket.
    func close() {
        _ = Glibc.close(descriptor.rawValue)
    }

    /// sendmsg with MSG_NOSIGNAL: a write to a socket whose peer closed must not raise
    /// SIGPIPE, which would end the whole VMM.
    private static func sendMessage(_ descriptor: FileDescriptor, _ vectors: inout [iovec]) -> WriteResult {
        unsafe vectors.withUnsafeMutableBufferPointer { vectors in
            var message = unsafe msghdr()
            unsafe message.msg_iov = vectors.baseAddress
            unsafe message.msg_iovlen = vectors.count
            while true {
                let written = unsafe sendmsg(descriptor.rawValue, &message, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                if written >= 0 { return .wrote(written) }
                switch errno {
                case EINTR: continue
                case EAGAIN, ENOBUFS: return .wrote(0)
                case let code: return .gone(Errno(rawValue: code))
                }
            }
        }
    }
}

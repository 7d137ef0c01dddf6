import Glibc
import HVCore
import SystemPackage

/// A connected Unix stream socket carrying Ethernet frames, each behind a 4-byte big-endian
/// length: the framing of QEMU's `-netdev stream` that **passt** speaks, so a user without
/// privileges gets networking by starting `passt --socket PATH` and pointing the VM at PATH.
///
/// The stream carries plain frames: no virtio-net header and no offloads. On receive, a frame
/// that has fully arrived is read with one `readv` straight into the guest's buffers (the
/// header in front of it is written as a plain one); a frame that arrives in pieces is gathered
/// in the backend first, so the socket is drained and the event loop does not spin while the
/// rest is on its way. A frame larger than the guest's buffers is read past and reported as
/// too large, so the stream never loses its framing. On transmit, a frame the socket takes only
/// in part is finished before the next one: the rest is kept and sent first.
public final class StreamNetBackend: NetBackend {
    /// The socket, closed with the backend.
    public let fileDescriptor: FileDescriptor
    /// "stream PATH".
    public let name: String
    /// None: plain frames only.
    public var supportedOffloads: TapOffloads { [] }

    /// The largest frame the stream may carry (a 64 KiB IP packet with its Ethernet headers).
    static let largestFrame = 65_535 + 18

    private struct State {
        /// A received frame not complete yet: its length prefix and the bytes so far.
        var partial: [UInt8] = []
        /// The unsent rest of a frame the socket took in part.
        var unsent: [UInt8] = []
    }

    private let state = Locked(State())

    /// Connects to the stream socket at `path` (passt's `--socket`).
    public convenience init(path: String) throws(NetBackendError) {
        let name = "stream \(path)"
        let descriptor: FileDescriptor
        do {
            descriptor = try UnixSocket.connect(to: path)
        } catch {
            throw .setup(backend: name, step: error == .fileNameTooLong ? "socket path (too long for sun_path)" : "connect", error)
        }
        try self.init(connected: descriptor, name: name)
    }

    /// Takes over `connected`, a connected stream socket (passt's `--fd`, or one end of a
    /// socketpair), and makes it non-blocking.
    public init(connected: FileDescriptor, name: String = "stream") throws(NetBackendError) {
        self.fileDescriptor = connected
        self.name = name
        let flags = fcntl(connected.rawValue, F_GETFL)
        guard flags >= 0, fcntl(connected.rawValue, F_SETFL, flags | O_NONBLOCK) == 0 else {
            throw .setup(backend: name, step: "O_NONBLOCK", Errno(rawValue: errno))
        }
    }

    deinit {
        close(fileDescriptor.rawValue)
    }

    /// Reads the next frame, if one has fully arrived, behind a plain header.
    public func receive(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> Int? {
        try state.withLock { state throws(NetBackendError) -> Int? in
            try flushUnsent(&state)
            let waiting = try bytesWaiting()
            if state.partial.isEmpty, waiting >= 4 {
                var prefix: UInt32 = 0
                let peeked = unsafe recv(fileDescriptor.rawValue, &prefix, 4, Int32(MSG_PEEK | MSG_DONTWAIT))
                guard peeked == 4 else { return unsafe try gather(&state, into: buffers) }
                let length = Int(UInt32(bigEndian: prefix))
                guard length <= Self.largestFrame else { throw .io(backend: name, operation: "frame length \(length)", .badMessage) }
                if waiting >= 4 + length, unsafe NetHeader.size + length <= IOVectors.totalLength(buffers) - 1 {
                    return unsafe try readWhole(length: length, into: buffers)
                }
            }
            return unsafe try gather(&state, into: buffers)
        }
    }

    /// Writes one frame behind its length, without the header (a plain one: no offloads).
    public func transmit(_ buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> Bool {
        try state.withLock { state throws(NetBackendError) -> Bool in
            try flushUnsent(&state)
            guard state.unsent.isEmpty else { return false }
            let frame = unsafe IOVectors.dropping(NetHeader.size, from: buffers)
            let length = unsafe IOVectors.totalLength(frame)
            var prefix = UInt32(length).bigEndian
            return unsafe try withUnsafeBytes(of: &prefix) { prefixBytes throws(NetBackendError) -> Bool in
                var vectors = unsafe [iovec(iov_base: UnsafeMutableRawPointer(mutating: prefixBytes.baseAddress), iov_len: 4)] + frame
                let written = unsafe try vectors.withUnsafeMutableBufferPointer { vectors throws(NetBackendError) in
                    unsafe try sendSome(UnsafeBufferPointer(vectors))
                }
                if written == 0 { return false }
                if written < 4 + length {
                    // The socket took part of the frame: the rest goes first next time.
                    state.unsent = unsafe IOVectors.bytes(of: vectors, from: written)
                }
                return true
            }
        }
    }

    // MARK: Receiving

    private func bytesWaiting() throws(NetBackendError) -> Int {
        var count: Int32 = 0
        guard unsafe ioctl(fileDescriptor.rawValue, UInt(FIONREAD), &count) == 0 else {
            throw .io(backend: name, operation: "FIONREAD", Errno(rawValue: errno))
        }
        return Int(count)
    }

    /// The whole frame is in the socket and fits: its length and bytes in one readv, the
    /// bytes straight into the guest's buffers behind a plain header.
    private func readWhole(length: Int, into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> Int {
        var prefix: UInt32 = 0
        unsafe try writePlainHeader(into: buffers)
        let frame = unsafe IOVectors.limited(IOVectors.dropping(NetHeader.size, from: buffers), to: length)
        let read = unsafe try withUnsafeMutableBytes(of: &prefix) { prefixBytes throws(NetBackendError) -> Int in
            var vectors = unsafe [iovec(iov_base: prefixBytes.baseAddress, iov_len: 4)] + frame
            return unsafe try vectors.withUnsafeMutableBufferPointer { vectors throws(NetBackendError) in
                unsafe try readSome(UnsafeBufferPointer(vectors))
            }
        }
        // FIONREAD said the bytes were there; a short read can only mean the peer went wrong.
        guard read == 4 + length else { throw .io(backend: name, operation: "readv of a whole frame", .ioError) }
        return NetHeader.size + length
    }

    /// Takes what the socket has into the partial frame; once it is complete, copies it into
    /// the guest's buffers (or reports it too large for them) and returns its length.
    private func gather(_ state: inout State, into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> Int? {
        let needed: Int
        if state.partial.count < 4 {
            needed = 4 - state.partial.count
        } else {
            let length = Int(state.partial.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
            guard length <= Self.largestFrame else { throw .io(backend: name, operation: "frame length \(length)", .badMessage) }
            needed = 4 + length - state.partial.count
        }
        if needed > 0 {
            var chunk = [UInt8](repeating: 0, count: needed)
            let read = unsafe try Self.withVector(over: &chunk) { vector throws(NetBackendError) in unsafe try readSome(vector) }
            guard read > 0 else { return nil }
            state.partial += chunk.prefix(read)
            // The prefix just completed: go on for the frame itself.
            if state.partial.count == 4 { return unsafe try gather(&state, into: buffers) }
            guard read == needed else { return nil }
        }
        let frame = state.partial.dropFirst(4)
        state.partial = []
        let room = unsafe IOVectors.totalLength(buffers)
        guard NetHeader.size + frame.count <= room - 1 else { return room }
        unsafe try writePlainHeader(into: buffers)
        unsafe IOVectors.copy(Array(frame), into: IOVectors.dropping(NetHeader.size, from: buffers))
        return NetHeader.size + frame.count
    }

    /// Reads what is there into `vectors`: the bytes read, 0 when nothing is.
    private func readSome(_ vectors: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> Int {
        unsafe try FrameIO.receive(fileDescriptor, into: vectors, backend: name) ?? 0
    }

    private func writePlainHeader(into buffers: UnsafeBufferPointer<iovec>) throws(NetBackendError) {
        guard unsafe IOVectors.totalLength(buffers) >= NetHeader.size else { throw .io(backend: name, operation: "receive buffers", .noBufferSpace) }
        unsafe IOVectors.copy(NetHeader().bytes, into: Array(buffers))
    }

    // MARK: Transmitting

    private func flushUnsent(_ state: inout State) throws(NetBackendError) {
        guard !state.unsent.isEmpty else { return }
        let written = unsafe try Self.withVector(over: &state.unsent) { vector throws(NetBackendError) in unsafe try sendSome(vector) }
        state.unsent.removeFirst(written)
    }

    /// Writes what the socket takes of `vectors`: the bytes written, 0 when it has no room.
    private func sendSome(_ vectors: UnsafeBufferPointer<iovec>) throws(NetBackendError) -> Int {
        unsafe try FrameIO.transmit(fileDescriptor, vectors, isSocket: true, backend: name) ?? 0
    }

    // MARK: iovec arithmetic

    /// Calls `body` with one iovec over `bytes`.
    private static func withVector(
        over bytes: inout [UInt8], _ body: (UnsafeBufferPointer<iovec>) throws(NetBackendError) -> Int
    ) throws(NetBackendError) -> Int {
        let result = unsafe bytes.withUnsafeMutableBytes { raw -> Result<Int, NetBackendError> in
            let vector = unsafe [iovec(iov_base: raw.baseAddress, iov_len: raw.count)]
            return unsafe vector.withUnsafeBufferPointer { vector in Result { () throws(NetBackendError) in unsafe try body(vector) } }
        }
        return try result.get()
    }
}

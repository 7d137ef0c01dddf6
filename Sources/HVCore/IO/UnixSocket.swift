import CHVCoreShims
import Glibc
import SystemPackage

/// Unix-domain stream sockets, as device backends use them: a listener at a path, a
/// connection to a path, a connected pair. Every descriptor is close-on-exec and, unless said
/// otherwise, non-blocking, for the event loop.
public enum UnixSocket {
    /// Connects to the stream socket listening at `path`.
    ///
    /// A Unix socket connects at once or not at all: the listener's backlog takes the
    /// connection before anyone accepts it. So a full backlog is `EAGAIN` and nobody listening
    /// is `ECONNREFUSED` (a stale socket file) or `ENOENT` (none).
    public static func connect(to path: String, nonBlocking: Bool = true) throws(Errno) -> FileDescriptor {
        var address = try socketAddress(path)
        let descriptor = try newSocket(nonBlocking: nonBlocking)
        let connected = unsafe withUnsafePointer(to: &address) {
            unsafe $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                unsafe Glibc.connect(descriptor.rawValue, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else {
            let error = Errno(rawValue: errno)
            close(descriptor.rawValue)
            throw error
        }
        return descriptor
    }

    /// A socket listening at `path`, non-blocking (accept with ``accept(_:)``). A socket file
    /// left at `path` by an earlier process is replaced; any other file there is an error
    /// (`EADDRINUSE`), so a mistyped path cannot remove a user's file.
    public static func listen(at path: String, backlog: Int32 = 128) throws(Errno) -> FileDescriptor {
        var address = try socketAddress(path)
        var status = stat()
        if unsafe lstat(path, &status) == 0 {
            guard status.st_mode & S_IFMT == S_IFSOCK else { throw .addressInUse }
            unsafe unlink(path)
        }
        let descriptor = try newSocket(nonBlocking: true)
        let bound = unsafe withUnsafePointer(to: &address) {
            unsafe $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                unsafe bind(descriptor.rawValue, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0, Glibc.listen(descriptor.rawValue, backlog) == 0 else {
            let error = Errno(rawValue: errno)
            close(descriptor.rawValue)
            throw error
        }
        return descriptor
    }

    /// The next connection waiting on `listener`, non-blocking; nil when none waits.
    public static func accept(_ listener: FileDescriptor) throws(Errno) -> FileDescriptor? {
        let descriptor = hv_accept_nonblocking(listener.rawValue)
        guard descriptor >= 0 else {
            let error = Errno(rawValue: errno)
            if error == .resourceTemporarilyUnavailable || error == .interrupted || error == .connectionAbort { return nil }
            throw error
        }
        return FileDescriptor(rawValue: descriptor)
    }

    /// Two connected stream sockets: the first non-blocking (for the event loop), the second
    /// blocking unless `bothNonBlocking`.
    public static func pair(bothNonBlocking: Bool = false) throws(Errno) -> (FileDescriptor, FileDescriptor) {
        var descriptors: [Int32] = [-1, -1]
        guard unsafe socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0, &descriptors) == 0 else {
            throw Errno(rawValue: errno)
        }
        let ends = (FileDescriptor(rawValue: descriptors[0]), FileDescriptor(rawValue: descriptors[1]))
        do {
            try setNonBlocking(ends.0)
            if bothNonBlocking { try setNonBlocking(ends.1) }
        } catch {
            close(descriptors[0])
            close(descriptors[1])
            throw error
        }
        return ends
    }

    /// Makes `descriptor` non-blocking.
    public static func setNonBlocking(_ descriptor: FileDescriptor) throws(Errno) {
        let flags = fcntl(descriptor.rawValue, F_GETFL)
        guard flags >= 0, fcntl(descriptor.rawValue, F_SETFL, flags | O_NONBLOCK) == 0 else { throw Errno(rawValue: errno) }
    }

    private static func newSocket(nonBlocking: Bool) throws(Errno) -> FileDescriptor {
        var type = Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue)
        if nonBlocking { type |= Int32(SOCK_NONBLOCK.rawValue) }
        let descriptor = socket(AF_UNIX, type, 0)
        guard descriptor >= 0 else { throw Errno(rawValue: errno) }
        return FileDescriptor(rawValue: descriptor)
    }

    /// `path` as a socket address; a path too long for `sun_path` is `ENAMETOOLONG`.
    private static func socketAddress(_ path: String) throws(Errno) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard !bytes.isEmpty, !bytes.contains(0) else { throw .invalidArgument }
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { throw .fileNameTooLong }
        unsafe withUnsafeMutableBytes(of: &address.sun_path) { raw in
            unsafe raw.copyBytes(from: bytes)
        }
        return address
    }
}

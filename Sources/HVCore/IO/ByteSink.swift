import Glibc
import Logging
import SystemPackage

/// Where a console device's output goes.
public protocol ByteSink: Sendable {
    /// Takes bytes the guest wrote. Called from vCPU or event-loop threads.
    func write(_ bytes: UnsafeRawBufferPointer)
}

/// A sink that writes to a file descriptor (stdout, a file, a pty), retrying short writes.
/// The caller keeps the descriptor open. Output to a descriptor that fails is dropped and logged.
public final class FileDescriptorSink: ByteSink {
    /// Where the bytes go.
    public let fileDescriptor: FileDescriptor
    private let logger: Logger

    /// A sink writing to `fileDescriptor`, which the caller keeps open.
    public init(_ fileDescriptor: FileDescriptor, logger: Logger = Logger(label: "hvkit.console")) {
        self.fileDescriptor = fileDescriptor
        self.logger = logger
    }

    /// Writes all of `bytes`, retrying short writes and EINTR; a failure is logged and the rest dropped.
    public func write(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress else { return }
        var done = 0
        while done < bytes.count {
            let result = unsafe Glibc.write(fileDescriptor.rawValue, base + done, bytes.count - done)
            if result < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN {
                    // A non-blocking descriptor that is full: wait until it drains.
                    var poller = pollfd(fd: fileDescriptor.rawValue, events: Int16(POLLOUT), revents: 0)
                    _ = unsafe poll(&poller, 1, 100)
                    continue
                }
                logger.warning("console output dropped", metadata: ["errno": "\(Errno(rawValue: errno))", "bytes": "\(bytes.count - done)"])
                return
            }
            done += result
        }
    }
}

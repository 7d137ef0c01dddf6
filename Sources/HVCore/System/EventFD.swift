import CHVCoreShims
import Glibc
import SystemPackage

/// A Linux eventfd: a 64-bit counter behind a file descriptor. It is what KVM signals for an
/// ioeventfd (a guest write became a notification) and what it waits on for an irqfd (a
/// write injects an interrupt). Owns its descriptor and closes it when released.
public final class EventFD: Notifier, Sendable {
    /// The eventfd, closed when this object goes away.
    public let fileDescriptor: FileDescriptor

    /// Creates an eventfd. Close-on-exec is always set.
    /// - Parameters:
    ///   - initialValue: the counter's starting value.
    ///   - nonBlocking: reads return `nil` instead of blocking when the counter is zero.
    ///   - semaphore: each read takes 1 from the counter instead of all of it.
    public init(initialValue: UInt32 = 0, nonBlocking: Bool = false, semaphore: Bool = false) throws(Errno) {
        var flags = HV_EFD_CLOEXEC
        if nonBlocking { flags |= HV_EFD_NONBLOCK }
        if semaphore { flags |= HV_EFD_SEMAPHORE }
        let fd = hv_eventfd(initialValue, flags)
        guard fd >= 0 else { throw Errno(rawValue: errno) }
        fileDescriptor = FileDescriptor(rawValue: fd)
    }

    deinit {
        close(fileDescriptor.rawValue)
    }

    /// Adds `count` to the counter, waking any reader.
    public func signal(_ count: UInt64 = 1) throws(Errno) {
        var value = count
        while true {
            let written = unsafe Glibc.write(fileDescriptor.rawValue, &value, 8)
            if written == 8 { return }
            if written < 0, errno == EINTR { continue }
            throw Errno(rawValue: errno)
        }
    }

    /// Adds 1 to the counter (``signal(_:)`` with 1).
    public func notify() throws(Errno) { try signal(1) }

    /// Returns the counter and resets it to zero (or takes 1, for a semaphore eventfd). Blocks while it is zero, unless the eventfd
    /// is non-blocking, in which case it returns nil.
    public func consume() throws(Errno) -> UInt64? {
        var value: UInt64 = 0
        while true {
            let got = unsafe Glibc.read(fileDescriptor.rawValue, &value, 8)
            if got == 8 { return value }
            if got < 0, errno == EINTR { continue }
            if got < 0, errno == EAGAIN { return nil }
            throw Errno(rawValue: errno)
        }
    }
}

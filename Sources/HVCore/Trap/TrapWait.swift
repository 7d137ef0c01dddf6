import Glibc
import SystemPackage

/// A wait a trap hands back to its backend instead of blocking the vCPU's thread
/// (``TrapOutcome/wait(_:)``): a hypercall poll that found nothing ready.
///
/// The backend takes the vCPU out of the way until one of ``readable`` is readable or the
/// clock reaches ``deadline``. A thread per vCPU blocks in poll(2) and still answers pause and
/// stop; a scheduler parks the vCPU and lets its worker run others. Then the backend calls
/// the trap again with the same site, value and registers (the guest has not run meanwhile),
/// and the trap finishes the call or waits again; it keeps what it needs to recognise the
/// repeat (its deadline) per vCPU. If the VM stops first, the trap is not called again.
public struct TrapWait: Sendable, Hashable {
    /// Descriptors whose readability ends the wait. The trap keeps them open until it is
    /// called again or told that the VM stops.
    public var readable: [FileDescriptor]
    /// When the wait ends anyway, in ``HostClock/monotonicNanoseconds()``; `UInt64.max`
    /// for never.
    public var deadline: UInt64

    /// A wait that ends when one of `readable` is readable or at `deadline`.
    public init(readable: [FileDescriptor], deadline: UInt64) {
        self.readable = readable
        self.deadline = deadline
    }

    /// How ``block(alsoWakingOn:)`` ended.
    public enum End: Sendable, Hashable {
        /// One of ``readable`` is readable (or reports an error or hang-up).
        case ready
        /// The deadline passed.
        case deadline
        /// The extra descriptor became readable: the backend wants the thread back.
        case woken
        /// A signal (a vCPU kick) interrupted the wait, or poll(2) failed.
        case interrupted
    }

    /// Blocks the calling thread in poll(2) until the wait ends or `waker` becomes readable.
    public func block(alsoWakingOn waker: FileDescriptor? = nil) -> End {
        var descriptors = readable.map { pollfd(fd: $0.rawValue, events: Int16(POLLIN), revents: 0) }
        if let waker { descriptors.append(pollfd(fd: waker.rawValue, events: Int16(POLLIN), revents: 0)) }
        let now = HostClock.monotonicNanoseconds()
        guard deadline > now else { return .deadline }
        let remaining = deadline - now
        // Whole milliseconds, rounded up so a short wait sleeps rather than spins; at most a
        // day per call (the caller waits again if the deadline is further).
        let milliseconds = Int32(min((remaining / 1_000_000) + (remaining % 1_000_000 == 0 ? 0 : 1), 86_400_000))
        let count = unsafe poll(&descriptors, nfds_t(descriptors.count), milliseconds)
        if count < 0 { return .interrupted }
        if let waker, let last = descriptors.last, last.fd == waker.rawValue, last.revents != 0 { return .woken }
        if descriptors.prefix(readable.count).contains(where: { $0.revents != 0 }) { return .ready }
        return HostClock.monotonicNanoseconds() >= deadline ? .deadline : .interrupted
    }
}

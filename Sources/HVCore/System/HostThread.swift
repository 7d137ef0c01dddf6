import CHVCoreShims
import Glibc
import SystemPackage

/// A joinable host thread with a name, for code that must not run on Swift's cooperative
/// pool: a vCPU blocks in KVM_RUN for as long as the guest runs, and an event loop blocks in
/// epoll_wait.
public final class HostThread: Sendable {
    private final class Box {
        let name: String
        let body: @Sendable () -> Void
        init(name: String, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }

    private let handle: pthread_t

    /// Starts `body` on a new thread named `name` (truncated to the kernel's 15 characters).
    public init(name: String, _ body: @escaping @Sendable () -> Void) throws(Errno) {
        let box = unsafe Unmanaged.passRetained(Box(name: name, body: body)).toOpaque()
        var thread = pthread_t()
        let result = unsafe pthread_create(&thread, nil, { context in
            // SAFETY: context is the Box retained just above; this thread takes that reference.
            guard let context = unsafe context else { return nil }
            let box = unsafe Unmanaged<Box>.fromOpaque(context).takeRetainedValue()
            _ = unsafe hv_set_thread_name(String(box.name.prefix(15)))
            box.body()
            return nil
        }, unsafe box)
        guard result == 0 else {
            unsafe Unmanaged<Box>.fromOpaque(box).release()
            throw Errno(rawValue: result)
        }
        handle = thread
    }

    /// Waits for the thread to end. Call once, and never from the thread itself.
    public func join() {
        _ = pthread_join(handle, nil)
    }

    /// Whether the caller is running on this thread.
    public var isCurrent: Bool { pthread_equal(handle, pthread_self()) != 0 }

    /// Lets the thread end without anyone joining it; the system frees it when it ends. Call
    /// at most once, instead of ``join()`` (for example when the last owner goes away on the
    /// thread itself).
    public func detach() {
        _ = pthread_detach(handle)
    }
}

// MARK: Placement

extension HostThread {
    /// Pins the calling thread to `cpus` (host CPU numbers): the scheduler runs it only there.
    /// Throws EINVAL for an empty list, a negative number or one the host does not have.
    public static func pinCurrentThread(to cpus: [Int]) throws(Errno) {
        let numbers = cpus.compactMap { Int32(exactly: $0) }
        guard !cpus.isEmpty, numbers.count == cpus.count else { throw .invalidArgument }
        let result = unsafe numbers.withUnsafeBufferPointer { buffer in
            // SAFETY: the buffer holds `count` Int32s for the duration of the call.
            unsafe hv_set_thread_affinity(buffer.baseAddress, Int32(buffer.count))
        }
        guard result == 0 else { throw Errno(rawValue: result) }
    }

    /// The host CPUs the calling thread may run on.
    public static func currentAffinity() throws(Errno) -> [Int] {
        var cpus = [Int32](repeating: 0, count: 1024)
        let count = unsafe cpus.withUnsafeMutableBufferPointer { buffer in
            // SAFETY: the buffer has room for `count` Int32s and the shim writes no more.
            unsafe hv_thread_affinity(buffer.baseAddress, Int32(buffer.count))
        }
        guard count >= 0 else { throw Errno(rawValue: -count) }
        return cpus.prefix(Int(count)).map(Int.init)
    }

    /// The host CPU the calling thread is on right now, or nil if the host cannot say.
    public static var currentCPU: Int? {
        let cpu = hv_current_cpu()
        return cpu >= 0 ? Int(cpu) : nil
    }
}

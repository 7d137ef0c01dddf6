import CHVCoreShims
import Synchronization

/// A value only one thread at a time may use: a `Synchronization.Mutex` that ThreadSanitizer
/// can see.
///
/// `Mutex` waits on a futex, which ThreadSanitizer does not know as a lock, so two critical
/// sections of the same mutex on two threads look like a race to it. `Locked` tells it about
/// each acquisition and release (at the mutex's address), which makes `make sanitize`'s
/// ThreadSanitizer run meaningful. In a build without the sanitizer the annotations are two
/// calls to empty functions per critical section. Use it as `Mutex`: `Locked(State())`, then
/// `withLock { state in ... }`.
public struct Locked<Value: ~Copyable>: ~Copyable {
    @usableFromInline let mutex: Mutex<Value>

    /// A lock around `initialValue`.
    @inlinable
    public init(_ initialValue: consuming sending Value) {
        mutex = Mutex(initialValue)
    }

    /// Runs `body` with the value while holding the lock, and returns what it returns.
    @inlinable
    public borrowing func withLock<Result: ~Copyable, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        try mutex.withLock { (value: inout sending Value) throws(E) -> sending Result in
            // SAFETY: the pointer only names the mutex for the sanitizer; nothing reads it.
            unsafe withUnsafePointer(to: mutex) { unsafe hv_tsan_acquire($0) }
            defer { unsafe withUnsafePointer(to: mutex) { unsafe hv_tsan_release($0) } }
            return try body(&value)
        }
    }
}

extension Locked: Sendable where Value: ~Copyable {}

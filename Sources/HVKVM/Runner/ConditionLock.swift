import Glibc

/// A mutex with a condition variable (pthread), for threads that must sleep until another
/// thread changes shared state: parked vCPUs and whoever waits for them to park.
final class ConditionLock: @unchecked Sendable {
    // SAFETY: both are allocated once, initialised before use, destroyed in deinit, and only
    // touched through pthread calls, which are thread-safe by contract. Hence @unchecked.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    init() {
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Sleeps until signalled; the caller holds the lock (inside ``withLock(_:)``).
    func wait() { pthread_cond_wait(condition, mutex) }

    /// Wakes every waiter; call with the lock held.
    func broadcast() { pthread_cond_broadcast(condition) }
}

import Glibc

/// A mutex with a condition variable (pthread), for threads that must sleep until another
/// thread changes shared state: parked vCPUs and whoever waits for them to park, and the
/// scheduler's idle workers and slice timer.
@safe final class ConditionLock: @unchecked Sendable {
    // SAFETY: both are allocated once, initialised before use, destroyed in deinit, and only
    // touched through pthread calls, which are thread-safe by contract. Hence @unchecked.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    init() {
        unsafe mutex = .allocate(capacity: 1)
        unsafe condition = .allocate(capacity: 1)
        unsafe pthread_mutex_init(mutex, nil)
        // Timed waits measure against the monotonic clock, as HostClock does.
        var attributes = pthread_condattr_t()
        unsafe pthread_condattr_init(&attributes)
        unsafe pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        unsafe pthread_cond_init(condition, &attributes)
        unsafe pthread_condattr_destroy(&attributes)
    }

    deinit {
        unsafe pthread_cond_destroy(condition)
        unsafe pthread_mutex_destroy(mutex)
        unsafe mutex.deallocate()
        unsafe condition.deallocate()
    }

    func withLock<T, Failure: Error>(_ body: () throws(Failure) -> T) throws(Failure) -> T {
        unsafe pthread_mutex_lock(mutex)
        defer { unsafe pthread_mutex_unlock(mutex) }
        return try body()
    }

    /// Sleeps until signalled; the caller holds the lock (inside ``withLock(_:)``).
    func wait() { unsafe pthread_cond_wait(condition, mutex) }

    /// Sleeps until signalled or until the monotonic clock reaches `deadline` (nanoseconds,
    /// as ``HostClock/monotonicNanoseconds()``); the caller holds the lock.
    func wait(untilNanoseconds deadline: UInt64) {
        var time = timespec(tv_sec: Int(deadline / 1_000_000_000), tv_nsec: Int(deadline % 1_000_000_000))
        unsafe pthread_cond_timedwait(condition, mutex, &time)
    }

    /// Wakes every waiter; call with the lock held.
    func broadcast() { unsafe pthread_cond_broadcast(condition) }
}

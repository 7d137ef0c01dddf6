import Glibc

/// Polls `condition` until it holds or about five seconds pass (a watchdog for work finishing
/// on another thread, not a timing assertion).
func waitUntil(_ condition: () throws -> Bool) rethrows -> Bool {
    for _ in 0..<5000 {
        if try condition() { return true }
        usleep(1000)
    }
    return try condition()
}

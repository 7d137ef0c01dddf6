import Glibc
import HVDevicesTesting
import HVMachine
import Synchronization
import Testing

let kvmUnavailableReason = KVM.unavailabilityReason()

extension Trait where Self == ConditionTrait {
    /// Runs the test only where /dev/kvm works, and says why it was skipped otherwise.
    static var requiresKVM: ConditionTrait {
        .enabled(if: kvmUnavailableReason == nil, Comment(rawValue: "needs /dev/kvm: \(kvmUnavailableReason ?? "")"))
    }
}

/// Stops `machine` after `seconds` unless `cancel` is called first, so a guest that hangs
/// fails its test instead of hanging the suite.
final class Watchdog: Sendable {
    private let fired = Atomic<Bool>(false)
    private let cancelled = Atomic<Bool>(false)
    private let thread = Locked<HostThread?>(nil)

    init(_ machine: Machine, seconds: Int) {
        let started = try? HostThread(name: "watchdog") { [self] in
            var left = seconds * 10
            while left > 0, !cancelled.load(ordering: .acquiring) {
                var pause = timespec(tv_sec: 0, tv_nsec: 100_000_000)
                nanosleep(&pause, nil)
                left -= 1
            }
            guard !cancelled.load(ordering: .acquiring) else { return }
            fired.store(true, ordering: .releasing)
            machine.stop()
        }
        thread.withLock { $0 = started }
    }

    /// Stops the watchdog and waits for its thread.
    func cancel() {
        cancelled.store(true, ordering: .releasing)
        thread.withLock { $0 }?.join()
    }
    var didFire: Bool { fired.load(ordering: .acquiring) }
}

/// Polls `condition` every 10 ms for up to `seconds`.
func waitUntil(seconds: Int, _ condition: () throws -> Bool) rethrows -> Bool {
    for _ in 0..<(seconds * 100) {
        if try condition() { return true }
        usleep(10_000)
    }
    return try condition()
}

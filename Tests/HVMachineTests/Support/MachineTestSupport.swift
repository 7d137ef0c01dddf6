import Glibc
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

/// Collects what a guest writes, and calls `onLine` for each complete line (without its end).
final class CollectingSink: ByteSink {
    private let bytes = Mutex<[UInt8]>([])
    private let onLine: (@Sendable (String) -> Void)?

    init(onLine: (@Sendable (String) -> Void)? = nil) { self.onLine = onLine }

    func write(_ buffer: UnsafeRawBufferPointer) {
        let lines: [String] = bytes.withLock { bytes in
            let start = bytes.count
            bytes.append(contentsOf: buffer)
            guard onLine != nil, buffer.contains(UInt8(ascii: "\n")) else { return [] }
            // The lines completed by this write.
            let lineStart = bytes[..<start].lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? 0
            let end = bytes.lastIndex(of: UInt8(ascii: "\n")) ?? lineStart
            return bytes[lineStart..<end].split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
                .map { String(decoding: $0, as: UTF8.self).trimmingSuffix("\r") }
        }
        for line in lines { onLine?(line) }
    }

    var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) : self
    }
}

/// Stops `machine` after `seconds` unless `cancel` is called first, so a guest that hangs
/// fails its test instead of hanging the suite.
final class Watchdog: Sendable {
    private let fired = Atomic<Bool>(false)
    private let cancelled = Atomic<Bool>(false)
    private let thread = Mutex<HostThread?>(nil)

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

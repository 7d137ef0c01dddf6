import HVCore
import Synchronization
import SystemPackage

/// An interrupt line that counts.
final class CountingInterruptLine: InterruptLine {
    private let counter = Atomic<Int>(0)
    var count: Int { counter.load(ordering: .acquiring) }
    func trigger() throws(Errno) { counter.add(1, ordering: .acquiringAndReleasing) }
}

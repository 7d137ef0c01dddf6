import HVCore
import Synchronization
import SystemPackage

/// An interrupt line that counts its triggers, for device tests without a hypervisor.
public final class CountingInterruptLine: InterruptLine {
    private let counter = Atomic<Int>(0)

    /// A line that has not fired.
    public init() {}

    /// How many times the device raised the line.
    public var count: Int { counter.load(ordering: .acquiring) }

    /// Counts one interrupt.
    public func trigger() throws(Errno) { counter.add(1, ordering: .acquiringAndReleasing) }
}

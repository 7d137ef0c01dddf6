import Synchronization

/// Counters one vCPU thread keeps as it runs, readable from any thread.
final class VCPUCounters: Sendable {
    let exits = Atomic<UInt64>(0)
    let portIO = Atomic<UInt64>(0)
    let mmio = Atomic<UInt64>(0)
    let traps = Atomic<UInt64>(0)
    let interruptions = Atomic<UInt64>(0)
    let otherExits = Atomic<UInt64>(0)
    let guestNanoseconds = Atomic<UInt64>(0)
    let vmmNanoseconds = Atomic<UInt64>(0)
    let parks = Atomic<UInt64>(0)
    let parkedNanoseconds = Atomic<UInt64>(0)
    let slices = Atomic<UInt64>(0)
    let migrations = Atomic<UInt64>(0)
    /// HostClock time of the first KVM_RUN, 0 before it.
    let firstEntry = Atomic<UInt64>(0)

    /// Called right before each KVM_RUN, at `now`: remembers the first.
    @inline(__always)
    func entering(at now: UInt64) {
        if firstEntry.load(ordering: .relaxed) == 0 { firstEntry.store(now, ordering: .relaxed) }
    }

    func count(_ exit: VMExit, trapped: Bool) {
        switch exit {
        case _ where trapped: traps.add(1, ordering: .relaxed)
        case .ioIn, .ioOut: portIO.add(1, ordering: .relaxed)
        case .mmioRead, .mmioWrite: mmio.add(1, ordering: .relaxed)
        case .interrupted: interruptions.add(1, ordering: .relaxed)
        default: otherExits.add(1, ordering: .relaxed)
        }
    }

    func snapshot(vcpu: UInt32) -> VCPUStatistics {
        VCPUStatistics(
            vcpu: vcpu, exits: exits.load(ordering: .relaxed), portIOExits: portIO.load(ordering: .relaxed),
            mmioExits: mmio.load(ordering: .relaxed), trapExits: traps.load(ordering: .relaxed),
            interruptions: interruptions.load(ordering: .relaxed), otherExits: otherExits.load(ordering: .relaxed),
            nanosecondsInGuest: guestNanoseconds.load(ordering: .relaxed), nanosecondsInVMM: vmmNanoseconds.load(ordering: .relaxed),
            parks: parks.load(ordering: .relaxed), nanosecondsParked: parkedNanoseconds.load(ordering: .relaxed),
            slices: slices.load(ordering: .relaxed), migrations: migrations.load(ordering: .relaxed),
            firstEntryNanoseconds: { let first = firstEntry.load(ordering: .relaxed); return first == 0 ? nil : first }())
    }
}

/// What one vCPU has done so far: exits by kind, and where its thread spent its time.
public struct VCPUStatistics: Sendable, Hashable, CustomStringConvertible {
    /// Which vCPU.
    public let vcpu: UInt32
    /// Every return from KVM_RUN.
    public let exits: UInt64
    /// Port-I/O exits handled by the bus (not traps).
    public let portIOExits: UInt64
    /// MMIO exits handled by the bus (not traps).
    public let mmioExits: UInt64
    /// Exits handed to a `RegisterTrap` (hypercalls).
    public let trapExits: UInt64
    /// Runs ended by a kick or a signal.
    public let interruptions: UInt64
    /// Every other exit (halt, shutdown, errors, ...).
    public let otherExits: UInt64
    /// Time inside KVM_RUN: the guest, and KVM's own exit handling.
    public let nanosecondsInGuest: UInt64
    /// Time between runs: decoding and handling exits in the VMM.
    public let nanosecondsInVMM: UInt64
    /// Times the vCPU was parked: by a pause, and under ``VCPUScheduler`` also while halted.
    public let parks: UInt64
    /// Time spent parked.
    public let nanosecondsParked: UInt64
    /// Under ``VCPUScheduler``: turns on a worker thread (0 with a thread per vCPU).
    public let slices: UInt64
    /// Under ``VCPUScheduler``: slices run on another worker than the one before.
    public let migrations: UInt64
    /// When the vCPU first entered the guest (its first KVM_RUN, on HVCore's `HostClock` monotonic
    /// clock), or nil if it has not yet: what start-up time is measured to.
    public let firstEntryNanoseconds: UInt64?

    /// The counts and times in one line.
    public var description: String {
        "vCPU \(vcpu): \(exits) exits (\(portIOExits) port I/O, \(mmioExits) MMIO, \(trapExits) traps, "
            + "\(interruptions) interrupted, \(otherExits) other), \(nanosecondsInGuest / 1000) us in KVM_RUN, "
            + "\(nanosecondsInVMM / 1000) us in the VMM, parked \(parks) times for \(nanosecondsParked / 1000) us"
            + (slices > 0 ? ", \(slices) slices (\(migrations) moved)" : "")
    }
}

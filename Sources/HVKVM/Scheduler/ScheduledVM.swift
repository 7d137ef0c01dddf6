import HVCore
import Synchronization

/// A VM whose vCPUs a ``VCPUScheduler`` runs on its workers. Made by
/// ``VCPUScheduler/add(_:pio:mmio:traps:vcpuCount:weight:halts:exitHandler:setup:)``; stop it, pause it, or wait for
/// it from any thread.
public final class ScheduledVM: @unchecked Sendable {
    /// What a vCPU's `hlt` does when the VM has no in-kernel irqchip (with one, KVM waits in
    /// the kernel and the vCPU holds its worker until its slice ends).
    public enum HaltBehavior: Sendable, Hashable {
        /// The VM stops with ``StopReason/halted(vcpu:)``, as under ``VCPURunner``.
        case stop
        /// The vCPU leaves the run queue and costs no CPU until ``ScheduledVM/wake()`` or
        /// until `timeout` passes (nil: no timeout), then runs on after its `hlt`.
        case sleep(timeout: Duration?)
    }

    /// The VM.
    public let vm: VirtualMachine
    /// A vCPU of this VM runs `weight` slices in a row when its turn comes.
    public let weight: Int
    /// What its vCPUs' `hlt` does.
    public let halts: HaltBehavior
    /// ``HaltBehavior/sleep(timeout:)``'s timeout in nanoseconds, when there is one.
    let haltTimeoutNanoseconds: UInt64?
    let dispatch: ExitDispatch
    let scheduler: VCPUScheduler
    /// Checked by workers at every exit without the scheduler's lock.
    let stopFlag = Atomic<Bool>(false)
    let pauseFlag = Atomic<Bool>(false)

    // SAFETY: every var below is read and written with the scheduler's lock held. Hence
    // @unchecked.
    var vcpus: [ScheduledVCPU] = []
    var paused = false
    var stopping = false
    var reasons: [UInt32: StopReason] = [:]
    var vmReason: StopReason?
    var waiters: [CheckedContinuation<StopReason, Never>] = []

    init(vm: VirtualMachine, weight: Int, halts: HaltBehavior, dispatch: ExitDispatch, scheduler: VCPUScheduler) {
        self.vm = vm
        self.weight = weight
        self.halts = halts
        if case let .sleep(timeout?) = halts { haltTimeoutNanoseconds = timeout.clampedNanoseconds } else { haltTimeoutNanoseconds = nil }
        self.dispatch = dispatch
        self.scheduler = scheduler
    }

    /// Asks every vCPU to stop. Returns at once; ``wait()`` or ``join()`` says when they have.
    public func stop() { scheduler.stop(self, reason: .stopRequested) }

    /// Takes every vCPU off the workers with its state intact; returns true once none runs,
    /// false if the VM stopped first.
    @discardableResult
    public func pause() -> Bool { scheduler.pause(self) }

    /// Lets a paused VM's vCPUs be scheduled again.
    public func resume() { scheduler.resume(self) }

    /// Puts halted vCPUs (``HaltBehavior/sleep(timeout:)``) back in the run queue: call it
    /// when something the guest waits for has happened (after injecting its interrupt). A
    /// vCPU not asleep yet does not sleep at its next halt, so a wake that comes just before
    /// the halt it is meant for is not lost.
    public func wake() { scheduler.wake(self) }

    /// Runs `body` with vCPU `id` while the VM is paused (on the calling thread: KVM accepts
    /// a vCPU's ioctls from any one thread at a time). Nil when the VM is not paused or has
    /// no such live vCPU.
    public func withPausedVCPU<T>(_ id: UInt32, _ body: (VCPU) throws(KVMError) -> T) throws(KVMError) -> T? {
        try scheduler.withPausedVCPU(self, id, body)
    }

    /// Suspends until every vCPU has stopped; returns why the VM stopped.
    public func wait() async -> StopReason {
        await withCheckedContinuation { continuation in
            let reason: StopReason? = scheduler.lock.withLock {
                if let vmReason, vcpus.allSatisfy({ $0.state == .done }) { return vmReason }
                waiters.append(continuation)
                return nil
            }
            if let reason { continuation.resume(returning: reason) }
        }
    }

    /// Blocks the calling thread until every vCPU has stopped; returns why the VM stopped.
    /// Never call it from a worker (an exit handler or a device).
    public func join() -> StopReason {
        scheduler.lock.withLock {
            while vmReason == nil || !vcpus.allSatisfy({ $0.state == .done }) { scheduler.lock.wait() }
            return vmReason ?? .stopRequested
        }
    }

    /// Why the VM stopped, once every vCPU has.
    public var stopReason: StopReason? {
        scheduler.lock.withLock { vcpus.allSatisfy { $0.state == .done } ? vmReason : nil }
    }

    /// Counters of each vCPU, by id, including slices run and moves between workers.
    public func statistics() -> [UInt32: VCPUStatistics] {
        let vcpus = scheduler.lock.withLock { self.vcpus }
        var snapshot: [UInt32: VCPUStatistics] = [:]
        for vcpu in vcpus { snapshot[vcpu.id] = vcpu.counters.snapshot(vcpu: vcpu.id) }
        return snapshot
    }
}

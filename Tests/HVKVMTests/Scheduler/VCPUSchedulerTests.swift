import HVTestSupport
import HVCore
import HVKVM
import Testing

/// The M:N scheduler on real KVM: many small VMs on few workers, slices enforced against
/// guests that never exit, weights, pause, halts that sleep, and stopping.
@Suite(.requiresKVM) struct VCPUSchedulerTests {
    /// Values a VM's guest wrote to port 0x20.
    final class PortLog: Sendable {
        let values = Locked<[UInt64]>([])
        var handler: VCPURunner.ExitHandler {
            { [self] _, exit in
                guard case let .ioOut(0x20, size, data) = exit else { return nil }
                values.withLock { $0.append(data.value(width: size)) }
                return .resume
            }
        }
        var snapshot: [UInt64] { values.withLock { $0 } }
    }

    /// A one-vCPU VM in long mode running `code` with RDI = `argument`, added to `scheduler`.
    func addVM(_ scheduler: VCPUScheduler, code: [UInt8], argument: UInt64 = 0, weight: Int = 1,
               halts: ScheduledVM.HaltBehavior = .stop, log: PortLog? = nil) throws -> (ScheduledVM, TestVM) {
        let vm = try TestVM(code: code)
        let cpuid = try vm.kvm.supportedCPUID()
        let memory = vm.memory
        let scheduled = try scheduler.add(vm.vm, pio: vm.pio, mmio: vm.mmio, weight: weight, halts: halts,
                                          exitHandler: log?.handler) { vcpu throws(KVMError) in
            try vcpu.setCPUID(cpuid)
            try vcpu.setupLongMode(memory: memory, entry: TestVM.entry, stackPointer: TestVM.stackTop, argument: argument)
        }
        return (scheduled, vm)
    }

    /// Polls `condition` every 5 ms for up to 10 s.
    func eventually(_ condition: () -> Bool) async throws -> Bool {
        for _ in 0..<2000 {
            if condition() { return true }
            try await Task.sleep(for: .milliseconds(5))
        }
        return condition()
    }

    /// Pauses `vm` and reads vCPU 0's rbx (the count loop's counter) until it is above
    /// `floor`, resuming in between: on a slow host (or under ThreadSanitizer) a slice can end
    /// before the guest ran an instruction. Leaves the VM paused; nil if it never got there.
    func pausedCount(of vm: ScheduledVM, above floor: UInt64) async throws -> UInt64? {
        for _ in 0..<400 {
            guard vm.pause() else { return nil }
            if let count = try vm.withPausedVCPU(0, { vcpu throws(KVMError) in try vcpu.registers().rbx }), count > floor {
                return count
            }
            vm.resume()
            try await Task.sleep(for: .milliseconds(5))
        }
        return nil
    }

    @Test("100 VMs on 2 workers all run to completion")
    func hundredVMsComplete() async throws {
        let scheduler = try VCPUScheduler(workers: 2, timeSlice: .milliseconds(1))
        defer { scheduler.shutdown() }
        var vms: [(ScheduledVM, TestVM, PortLog)] = []
        for _ in 0..<100 {
            let log = PortLog()
            let (scheduled, vm) = try addVM(scheduler, code: TestGuests.workThenHalt, argument: 500, log: log)
            vms.append((scheduled, vm, log))
        }
        for (scheduled, _, log) in vms {
            #expect(await scheduled.wait() == .halted(vcpu: 0))
            #expect(log.snapshot == [500])
        }
        #expect(scheduler.activeVMCount == 0)
    }

    @Test("100 spinning VMs on 2 workers get a fair share of slices")
    func hundredVMsShareFairly() async throws {
        let scheduler = try VCPUScheduler(workers: 2, timeSlice: .milliseconds(1))
        defer { scheduler.shutdown() }
        var vms: [(ScheduledVM, TestVM)] = []
        for _ in 0..<100 { vms.append(try addVM(scheduler, code: TestGuests.countLoop)) }
        // The first VMs ran alone while the rest were being made: count from now on.
        func slices() -> [UInt64] { vms.map { $0.0.statistics()[0]?.slices ?? 0 } }
        let before = slices()
        // A round of 100 one-millisecond slices on 2 workers takes about 50 ms: let several pass.
        #expect(try await eventually { zip(slices(), before).allSatisfy { $0 - $1 >= 4 } })
        // Read while they run: the reads take microseconds, a slice a millisecond.
        let turns = zip(slices(), before).map { $0 - $1 }
        // Every VM ran guest code. On a loaded host whose KVM emulates guest code, a VM's first
        // slices may end before its first instruction: then the VMs run on for a while.
        var counts: [UInt64] = []
        for _ in 0..<50 {
            for (scheduled, _) in vms { scheduled.pause() }
            counts = try vms.map { vm in try #require(try vm.0.withPausedVCPU(0) { vcpu throws(KVMError) in try vcpu.registers().rbx }) }
            guard counts.contains(0) else { break }
            for (scheduled, _) in vms { scheduled.resume() }
            try await Task.sleep(for: .milliseconds(100))
        }
        for (scheduled, _) in vms { scheduled.stop() }
        for (scheduled, _) in vms { #expect(await scheduled.wait() == .stopRequested) }
        // Round robin: no VM is more than a couple of turns ahead of another.
        let spread = (turns.max() ?? 0) - (turns.min() ?? 0)
        #expect(spread <= 2, "slices per VM range from \(turns.min() ?? 0) to \(turns.max() ?? 0)")
        #expect(counts.allSatisfy { $0 > 0 }, "a VM never ran guest code")
        #expect(scheduler.sliceKicks > 0, "no guest was kicked at the end of its slice")
    }

    @Test("a guest that never exits cannot keep its worker from the others")
    func tightLoopDoesNotStarve() async throws {
        let scheduler = try VCPUScheduler(workers: 1, timeSlice: .milliseconds(2))
        defer { scheduler.shutdown() }
        let (spinner, _) = try addVM(scheduler, code: TestGuests.spin)
        let log = PortLog()
        let (worker, _) = try addVM(scheduler, code: TestGuests.workThenHalt, argument: 2000, log: log)
        #expect(await worker.wait() == .halted(vcpu: 0))
        #expect(log.snapshot == [2000])
        #expect(spinner.stopReason == nil, "the spinner should still be running")
        let spins = try #require(spinner.statistics()[0])
        #expect(spins.slices >= 2, "the spinner was never preempted: \(spins)")
        spinner.stop()
        #expect(await spinner.wait() == .stopRequested)
    }

    @Test("a VM whose vCPU waits in the kernel for a startup IPI that never comes holds its worker one slice at a time")
    func vcpuWaitingInTheKernelDoesNotStarve() async throws {
        let scheduler = try VCPUScheduler(workers: 1, timeSlice: .milliseconds(2))
        defer { scheduler.shutdown() }
        let (stuck, setup) = try SMPTests.initTargetVM()
        let stuckVM = try scheduler.add(stuck.vm, pio: stuck.pio, mmio: stuck.mmio, vcpuCount: 2, setup: setup)
        let log = PortLog()
        let (worker, _) = try addVM(scheduler, code: TestGuests.workThenHalt, argument: 2000, log: log)
        #expect(await worker.wait() == .halted(vcpu: 0))
        #expect(log.snapshot == [2000])
        stuckVM.stop()
        #expect(await stuckVM.wait() == .stopRequested)
    }

    @Test("a VM of weight 3 runs three slices per turn to a VM of weight 1")
    func weightsShareTime() async throws {
        let scheduler = try VCPUScheduler(workers: 1, timeSlice: .milliseconds(2))
        defer { scheduler.shutdown() }
        let (light, _) = try addVM(scheduler, code: TestGuests.spin, weight: 1)
        let (heavy, _) = try addVM(scheduler, code: TestGuests.spin, weight: 3)
        // The light VM ran alone until the heavy one was added: count from now on.
        func sample() throws -> (light: VCPUStatistics, heavy: VCPUStatistics) {
            (try #require(light.statistics()[0]), try #require(heavy.statistics()[0]))
        }
        let before = try sample()
        #expect(try await eventually { (light.statistics()[0]?.slices ?? 0) >= before.light.slices + 20 })
        let after = try sample()
        // Turns alternate, so the heavy VM has 3 slices for each of the light one's, give or
        // take the turns under way.
        let lightSlices = Int(after.light.slices - before.light.slices), heavySlices = Int(after.heavy.slices - before.heavy.slices)
        #expect(abs(heavySlices - 3 * lightSlices) <= 4, "\(heavySlices) slices against \(lightSlices)")
        // Guest time follows, less exactly: a kick can come late on a busy host.
        let ratio = Double(after.heavy.nanosecondsInGuest - before.heavy.nanosecondsInGuest)
            / Double(max(after.light.nanosecondsInGuest - before.light.nanosecondsInGuest, 1))
        #expect(ratio > 1.5, "guest time ratio \(ratio), expected about 3")
        light.stop()
        heavy.stop()
        _ = await light.wait()
        _ = await heavy.wait()
    }

    @Test("pause takes a VM off the workers with its state; resume goes on")
    func pauseAndResume() async throws {
        let scheduler = try VCPUScheduler(workers: 2, timeSlice: .milliseconds(1))
        defer { scheduler.shutdown() }
        let (counter, _) = try addVM(scheduler, code: TestGuests.countLoop)
        let (other, _) = try addVM(scheduler, code: TestGuests.countLoop)
        #expect(try await eventually { (counter.statistics()[0]?.slices ?? 0) >= 2 })
        let first = try #require(try await pausedCount(of: counter, above: 0), "the guest never counted")
        let slicesWhilePaused = counter.statistics()[0]?.slices
        try await Task.sleep(for: .milliseconds(30))
        #expect(try counter.withPausedVCPU(0) { vcpu throws(KVMError) in try vcpu.registers().rbx } == first)
        #expect(counter.statistics()[0]?.slices == slicesWhilePaused, "a paused VM was scheduled")
        #expect(other.stopReason == nil)
        counter.resume()
        #expect(try counter.withPausedVCPU(0) { _ throws(KVMError) in 0 } == nil, "a running VM has no paused vCPU")
        #expect(try await eventually { (counter.statistics()[0]?.slices ?? 0) > (slicesWhilePaused ?? 0) })
        // Resumed from where it was: it counts on past `first`.
        let second = try #require(try await pausedCount(of: counter, above: first), "the guest did not count on after resume")
        #expect(second > first)
        counter.stop()
        other.stop()
        #expect(await counter.wait() == .stopRequested)
        #expect(await other.wait() == .stopRequested)
        #expect(!counter.pause(), "pause after the end")
    }

    /// A VM of the halt-steps guest (reports 1, hlt, 2, hlt, 3) on `scheduler`, once it has
    /// reported 1 and sleeps at its first hlt: set aside (a park), which may come a slice after
    /// the report.
    func haltStepsAsleep(on scheduler: VCPUScheduler) async throws -> (ScheduledVM, PortLog) {
        let log = PortLog()
        let (scheduled, _) = try addVM(scheduler, code: TestGuests.haltSteps, halts: .sleep(timeout: nil), log: log)
        #expect(try await eventually { log.snapshot == [1] && (scheduled.statistics()[0]?.parks ?? 0) >= 1 })
        return (scheduled, log)
    }

    @Test("a halted vCPU sleeps off the queue until woken")
    func haltSleepsUntilWake() async throws {
        let scheduler = try VCPUScheduler(workers: 1, timeSlice: .milliseconds(2))
        defer { scheduler.shutdown() }
        let (scheduled, log) = try await haltStepsAsleep(on: scheduler)
        let asleep = try #require(scheduled.statistics()[0])
        try await Task.sleep(for: .milliseconds(30))
        #expect(log.snapshot == [1])
        #expect(scheduled.statistics()[0]?.slices == asleep.slices, "a sleeping vCPU was scheduled")
        scheduled.wake()
        // Asleep again at the second hlt before the second wake (a wake that comes earlier is
        // the next test's).
        #expect(try await eventually { log.snapshot == [1, 2] && (scheduled.statistics()[0]?.parks ?? 0) >= 2 })
        scheduled.wake()
        #expect(try await eventually { log.snapshot == [1, 2, 3] })
        // Stop reaches a vCPU wherever it is, spinning here.
        scheduled.stop()
        #expect(await scheduled.wait() == .stopRequested)
        #expect((scheduled.statistics()[0]?.parks ?? 0) >= 2)
    }

    @Test("a wake that comes before the halt it is meant for is not lost")
    func aWakeBeforeTheHaltIsKept() async throws {
        let scheduler = try VCPUScheduler(workers: 1, timeSlice: .milliseconds(2))
        defer { scheduler.shutdown() }
        let (scheduled, log) = try await haltStepsAsleep(on: scheduler)
        // Two wakes back to back: the first ends the sleep at the first hlt; the second comes
        // while the vCPU runs towards the second (or once it sleeps there). Either way it runs
        // on to 3 with no third wake.
        scheduled.wake()
        scheduled.wake()
        #expect(try await eventually { log.snapshot == [1, 2, 3] }, "\(log.snapshot)")
        scheduled.stop()
        #expect(await scheduled.wait() == .stopRequested)
    }

    @Test("a halt with a timeout runs on after it; a sleeping vCPU stops when its VM does")
    func haltTimeoutAndStopWhileAsleep() async throws {
        let scheduler = try VCPUScheduler(workers: 1, timeSlice: .milliseconds(2))
        defer { scheduler.shutdown() }
        let log = PortLog()
        let (timed, _) = try addVM(scheduler, code: TestGuests.haltSteps, halts: .sleep(timeout: .milliseconds(10)), log: log)
        #expect(try await eventually { log.snapshot == [1, 2, 3] })
        timed.stop()
        #expect(await timed.wait() == .stopRequested)

        let sleeperLog = PortLog()
        let (sleeper, _) = try addVM(scheduler, code: TestGuests.haltSteps, halts: .sleep(timeout: nil), log: sleeperLog)
        #expect(try await eventually { sleeperLog.snapshot == [1] })
        sleeper.stop()
        #expect(await sleeper.wait() == .stopRequested)
        #expect(sleeper.join() == .stopRequested)
    }

    @Test("a VM that stops for its own reason leaves the others running")
    func oneVMStopsOthersGoOn() async throws {
        let scheduler = try VCPUScheduler(workers: 2, timeSlice: .milliseconds(1))
        defer { scheduler.shutdown() }
        let (faulting, _) = try addVM(scheduler, code: TestGuests.tripleFault)
        let (spinner, _) = try addVM(scheduler, code: TestGuests.spin)
        #expect(await faulting.wait() == .shutdown(vcpu: 0))
        #expect(spinner.stopReason == nil)
        scheduler.shutdown()
        #expect(await spinner.wait() == .stopRequested)
        #expect(scheduler.activeVMCount == 0)
    }

    @Test("VMs the embedder lets go of, before or just after they end, are kept until their vCPUs are done")
    func droppedVMsAreKeptAlive() async throws {
        let scheduler = try VCPUScheduler(workers: 2, timeSlice: .milliseconds(1))
        for _ in 0..<20 {
            // Dropped at once: the scheduler keeps it running to its halt.
            _ = try addVM(scheduler, code: TestGuests.workThenHalt, argument: 200)
        }
        for _ in 0..<20 {
            // Dropped right after its end, while a worker may still be settling its vCPU.
            let (scheduled, _) = try addVM(scheduler, code: TestGuests.workThenHalt, argument: 200)
            #expect(await scheduled.wait() == .halted(vcpu: 0))
        }
        #expect(try await eventually { scheduler.activeVMCount == 0 })
        scheduler.shutdown()
    }

    @Test("bad configurations are refused with the cause")
    func refusesBadConfigurations() throws {
        #expect(throws: KVMError.self) { try VCPUScheduler(workers: 0) }
        #expect(throws: KVMError.self) { try VCPUScheduler(workers: 1, timeSlice: .microseconds(10)) }
        #expect(throws: KVMError.self) { try VCPUScheduler(workers: 1, timeSlice: .seconds(-1)) }
        let scheduler = try VCPUScheduler(workers: 1)
        #expect(throws: KVMError.self) { try addVM(scheduler, code: TestGuests.spin, weight: 0) }
        #expect(throws: KVMError.self) { try addVM(scheduler, code: TestGuests.spin, weight: 65) }
        scheduler.shutdown()
        #expect(throws: KVMError.self) { try addVM(scheduler, code: TestGuests.spin) }
    }
}

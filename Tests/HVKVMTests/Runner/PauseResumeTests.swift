import HVTestSupport
import HVCore
import HVKVM
import Testing

/// VCPURunner's pause, resume and statistics on guests that never exit on their own.
@Suite(.requiresKVM) struct PauseResumeTests {
    func counter(_ runner: VCPURunner, _ id: UInt32) -> UInt64? {
        runner.withPausedVCPU(id) { vcpu in (try? vcpu.registers())?.rbx ?? 0 }
    }

    @Test("pause parks every vCPU with its state; resume goes on from there")
    func pauseReadsRegistersAndResumeContinues() async throws {
        let vm = try TestVM(code: TestGuests.countLoop)
        let runner = VCPURunner(vm: vm.vm, pio: vm.pio, mmio: vm.mmio)
        try runner.start(vcpuCount: 2, setup: try vm.longMode())
        try await Task.sleep(for: .milliseconds(30))

        #expect(runner.pause())
        let first = try #require(counter(runner, 0))
        #expect(first > 0, "the guest never counted")
        #expect(counter(runner, 1) != nil)
        try await Task.sleep(for: .milliseconds(30))
        // Parked: the count does not move.
        #expect(counter(runner, 0) == first)
        let parked = runner.statistics()
        #expect(parked.count == 2)
        #expect(parked.values.allSatisfy { $0.parks == 1 })

        runner.resume()
        #expect(runner.withPausedVCPU(0) { _ in 0 } == nil, "a running VM has no parked vCPU")
        try await Task.sleep(for: .milliseconds(30))
        #expect(runner.pause())
        let second = try #require(counter(runner, 0))
        #expect(second > first, "the count did not go on after resume")
        runner.resume()

        runner.stop()
        let (reason, timedOut) = await TestVM.wait(for: runner, timeout: .seconds(10))
        #expect(!timedOut)
        #expect(reason == .stopRequested)
        let statistics = try #require(runner.statistics()[0])
        #expect(statistics.parks == 2)
        #expect(statistics.interruptions >= 2)
        #expect(statistics.nanosecondsInGuest > 0)
    }

    @Test("stop while paused ends the VM; pause after the end says so")
    func stopWhilePaused() async throws {
        let vm = try TestVM(code: TestGuests.spin)
        let runner = VCPURunner(vm: vm.vm, pio: vm.pio, mmio: vm.mmio)
        try runner.start(vcpuCount: 1, setup: try vm.longMode())
        #expect(runner.pause())
        runner.stop()
        let (reason, timedOut) = await TestVM.wait(for: runner, timeout: .seconds(10))
        #expect(!timedOut, "parked vCPUs did not leave on stop")
        #expect(reason == .stopRequested)
        #expect(!runner.pause())
        #expect(runner.withPausedVCPU(0) { _ in 0 } == nil)
    }

    @Test("statistics count exits by kind")
    func statisticsCountExits() async throws {
        let vm = try TestVM(code: TestGuests.longModeIo)
        _ = try vm.attachEchoDevices(mmioBase: GuestAddress(0xD000_0000), mmioLength: 0x1000)
        let runner = VCPURunner(vm: vm.vm, pio: vm.pio, mmio: vm.mmio)
        #expect(runner.statistics().isEmpty)
        let beforeStart = HostClock.monotonicNanoseconds()
        try runner.start(vcpuCount: 1, setup: try vm.longMode())
        _ = await TestVM.wait(for: runner, timeout: .seconds(10))
        let statistics = try #require(runner.statistics()[0])
        let firstEntry = try #require(statistics.firstEntryNanoseconds, "the first KVM_RUN is recorded")
        #expect(firstEntry > beforeStart && firstEntry < HostClock.monotonicNanoseconds())
        #expect(statistics.portIOExits > 0)
        #expect(statistics.exits == statistics.portIOExits + statistics.mmioExits + statistics.trapExits
            + statistics.interruptions + statistics.otherExits)
        #expect(statistics.mmioExits > 0)
        #expect(statistics.otherExits >= 1)  // the final halt
    }
}

import HVTestSupport
import HVCore
import HVKVM
import Testing

/// Pinning vCPU threads to host CPUs, thread names, and KVM's halt polling.
@Suite(.requiresKVM) struct PlacementTests {
    @Test("VCPUPlacement maps vCPU ids to CPU sets")
    func placementTable() {
        #expect(VCPUPlacement.unpinned.cpus(for: 3) == nil)
        #expect(VCPUPlacement.all([0, 1]).cpus(for: 7) == [0, 1])
        #expect(VCPUPlacement.spread([2, 5]).cpus(for: 0) == [2])
        #expect(VCPUPlacement.spread([2, 5]).cpus(for: 3) == [5])
        #expect(VCPUPlacement.perVCPU([1: [0]]).cpus(for: 1) == [0])
        #expect(VCPUPlacement.perVCPU([1: [0]]).cpus(for: 0) == nil)
    }

    @Test("spread placement pins each vCPU thread before its setup runs")
    func spreadPinsThreads() async throws {
        let available = try HostThread.currentAffinity()
        let vm = try TestVM(code: TestGuests.spin)
        let runner = VCPURunner(vm: vm.vm, pio: vm.pio, mmio: vm.mmio, placement: .spread(available))
        let seen = Locked<[UInt32: [Int]]>([:])
        let longMode = try vm.longMode()
        try runner.start(vcpuCount: 3) { vcpu throws(KVMError) in
            let cpus = (try? HostThread.currentAffinity()) ?? []
            seen.withLock { $0[vcpu.id] = cpus }
            try longMode(vcpu)
        }
        runner.stop()
        _ = await TestVM.wait(for: runner, timeout: .seconds(10))
        for id in 0..<UInt32(3) {
            #expect(seen.withLock { $0[id] } == [available[Int(id) % available.count]])
        }
    }

    @Test("a CPU the host does not have is refused by start with the cause")
    func pinningToMissingCPUFails() throws {
        let vm = try TestVM(code: TestGuests.spin)
        let runner = VCPURunner(vm: vm.vm, pio: vm.pio, mmio: vm.mmio, placement: .all([100_000]))
        #expect(throws: KVMError.self) { try runner.start(vcpuCount: 1, setup: try vm.longMode()) }
    }

    @Test("halt polling can be set where the host offers it")
    func haltPolling() throws {
        let kvm = try KVM()
        let vm = try kvm.createVM()
        if vm.haltPollingSupported {
            try vm.setHaltPolling(maxNanoseconds: 0)
            try vm.setHaltPolling(maxNanoseconds: 200_000)
        } else {
            #expect(throws: KVMError.self) { try vm.setHaltPolling(maxNanoseconds: 0) }
        }
    }
}

import HVTestSupport
import HVCore
import HVKVM
import Testing

/// Guests with several vCPUs: started each at its own entry, or the way Linux starts them,
/// through INIT and startup IPIs on the in-kernel LAPIC.
@Suite(.requiresKVM) struct SMPTests {
    /// Records which vCPU wrote what to which port.
    final class Reports: Sendable {
        let entries = Locked<[(vcpu: UInt32, port: UInt16, value: UInt64)]>([])

        var handler: VCPURunner.ExitHandler {
            { [self] vcpu, exit in
                guard case let .ioOut(port, size, data) = exit else { return nil }
                entries.withLock { $0.append((vcpu.id, port, data.value(width: size))) }
                return .resume
            }
        }

        /// Waits (up to 10 s) until `count` reports have come in.
        func wait(for count: Int) async throws -> [(vcpu: UInt32, port: UInt16, value: UInt64)] {
            for _ in 0..<1000 {
                let current = entries.withLock { $0 }
                if current.count >= count { return current }
                try await Task.sleep(for: .milliseconds(10))
            }
            return entries.withLock { $0 }
        }
    }

    @Test("every vCPU starts at its own entry with its own stack and id, and reports", arguments: [2, 4])
    func perVCPUEntries(vcpuCount: Int) async throws {
        let vm = try TestVM(code: TestGuests.smpReport)
        let reports = Reports()
        let runner = VCPURunner(vm: vm.vm, pio: vm.pio, mmio: vm.mmio, exitHandler: reports.handler)
        let cpuid = try vm.kvm.supportedCPUID()
        let memory = vm.memory
        try runner.start(vcpuCount: vcpuCount) { vcpu throws(KVMError) in
            try vcpu.setCPUID(cpuid)
            try vcpu.setupLongMode(memory: memory, entry: TestVM.entry,
                                   stackPointer: TestVM.stackTop - UInt64(vcpu.id) * 0x400, argument: UInt64(vcpu.id))
        }
        let seen = try await reports.wait(for: vcpuCount)
        runner.stop()
        let (reason, timedOut) = await TestVM.wait(for: runner, timeout: .seconds(10))
        #expect(!timedOut)
        #expect(reason == .stopRequested)

        // Each vCPU reported its own id, once.
        #expect(seen.count == vcpuCount)
        #expect(Set(seen.map(\.vcpu)) == Set(0..<UInt32(vcpuCount)))
        #expect(seen.allSatisfy { $0.port == 0x20 && UInt64($0.vcpu) == $0.value })
        // ... wrote its own slot, and all added to the shared counter without losing one.
        for id in 0..<UInt64(vcpuCount) {
            #expect(try vm.memory.read(UInt64.self, at: GuestAddress(0x9000 + id * 8)) == id + 0x100)
        }
        #expect(try vm.memory.read(UInt64.self, at: GuestAddress(0x9100)) == UInt64(vcpuCount) * 100)
    }

    @Test("application processors wait for INIT and a startup IPI from the bootstrap processor")
    func startupIPIs() async throws {
        let vcpuCount = 3
        let vm = try TestVM(code: TestGuests.sipiBsp)
        try vm.memory.write(TestGuests.sipiAp, to: GuestAddress(0x8000))
        try vm.vm.createIRQChip()
        let reports = Reports()
        let runner = VCPURunner(vm: vm.vm, pio: vm.pio, mmio: vm.mmio, exitHandler: reports.handler)
        let cpuid = try vm.kvm.supportedCPUID()
        let memory = vm.memory
        let initialStates = Locked<[UInt32: MPState]>([:])
        try runner.start(vcpuCount: vcpuCount) { vcpu throws(KVMError) in
            try vcpu.setCPUID(cpuid)
            let state = try vcpu.mpState()
            initialStates.withLock { $0[vcpu.id] = state }
            // Only the bootstrap processor is set up; the others keep KVM's reset state and
            // wait in KVM_RUN until the guest starts them.
            if vcpu.id == 0 {
                try vcpu.setupProtectedMode(memory: memory, entry: TestVM.entry, stackPointer: TestVM.stackTop)
            }
        }
        let seen = try await reports.wait(for: vcpuCount)
        runner.stop()
        let (reason, timedOut) = await TestVM.wait(for: runner, timeout: .seconds(10))
        #expect(!timedOut)
        #expect(reason == .stopRequested)

        #expect(initialStates.withLock { $0 } == [0: .runnable, 1: .uninitialized, 2: .uninitialized])
        #expect(seen.first.map { $0.vcpu == 0 && $0.port == 0x20 && $0.value == 0xB5 } == true, "the BSP reports (before it sends the IPIs) ahead of every AP: \(seen)")
        let applicationProcessors = seen.filter { $0.port == 0x21 }
        #expect(Set(applicationProcessors.map(\.vcpu)) == [1, 2])
        // Each took a different ticket.
        #expect(Set(applicationProcessors.map(\.value)) == [0, 1])
    }

    @Test("stop ends a VM whose vCPUs all spin in the guest, and every vCPU thread is joined")
    func stopIsBoundedAndJoinsEveryThread() async throws {
        let vm = try TestVM(code: TestGuests.spin)
        let runner = VCPURunner(vm: vm.vm, pio: vm.pio, mmio: vm.mmio)
        try runner.start(vcpuCount: 4, setup: try vm.longMode())
        try await Task.sleep(for: .milliseconds(20))
        runner.stop()
        // TestVM.wait joins the threads (pthread_join), so its return means none is left.
        let (reason, timedOut) = await TestVM.wait(for: runner, timeout: .seconds(10))
        #expect(!timedOut, "the vCPUs did not leave the guest")
        #expect(reason == .stopRequested)
        #expect(runner.vcpuStopReasons == [0: .stopRequested, 1: .stopRequested, 2: .stopRequested, 3: .stopRequested])
        #expect(runner.statistics().values.allSatisfy { $0.interruptions >= 1 })
    }

    /// A 2-vCPU VM with the in-kernel irqchip: vCPU 0 runs init_ap.S, vCPU 1 spins at 0x20000
    /// until vCPU 0's INIT sends it to wait for a startup IPI, inside KVM_RUN.
    static func initTargetVM() throws -> (TestVM, VCPURunner.Setup) {
        let vm = try TestVM(code: TestGuests.initAp)
        try vm.memory.write(TestGuests.spin, to: GuestAddress(0x20000))
        try vm.vm.createIRQChip()
        let memory = vm.memory
        return (vm, { vcpu throws(KVMError) in
            let entry = vcpu.id == 0 ? TestVM.entry : GuestAddress(0x20000)
            try vcpu.setupProtectedMode(memory: memory, entry: entry, stackPointer: TestVM.stackTop)
            try vcpu.setMPState(.runnable)
        })
    }

    @Test("a vCPU sent INIT by the guest waits in the kernel, and still parks and stops")
    func initByTheGuestIsPausableAndStoppable() async throws {
        let (vm, setup) = try Self.initTargetVM()
        let runner = VCPURunner(vm: vm.vm, pio: vm.pio, mmio: vm.mmio)
        try runner.start(vcpuCount: 2, setup: setup)
        try await Task.sleep(for: .milliseconds(50))
        #expect(runner.pause(), "a vCPU waiting for a startup IPI must still park")
        let state = runner.withPausedVCPU(1) { vcpu in try? vcpu.mpState() }
        #expect(state == .some(.initReceived), "vCPU 1 is \(String(describing: state))")
        runner.resume()
        runner.stop()
        let (reason, timedOut) = await TestVM.wait(for: runner, timeout: .seconds(10))
        #expect(!timedOut)
        #expect(reason == .stopRequested)
    }
}

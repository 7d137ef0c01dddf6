import HVTestSupport
import HVCore
import HVKVM
import Synchronization
import Testing

/// What a guest reset does under each ResetPolicy: a triple fault, and a write to a reset
/// device that calls VCPURunner.requestReset().
@Suite(.requiresKVM) struct ResetPolicyTests {
    /// Ports 0x20-0x27. Port 0x22 records the boot count the guest reports (a 4-byte write);
    /// a write to port 0x23 asks the runner for a reset, as an i8042 or port 0xCF9 would.
    final class ResetDevice: BusDevice {
        let boots = Locked<[UInt64]>([])
        let runner = Locked<VCPURunner?>(nil)

        func read(offset: UInt64, width: AccessWidth) -> UInt64 { 0 }
        func write(offset: UInt64, width: AccessWidth, value: UInt64) {
            switch offset {
            case 2: boots.withLock { $0.append(value) }
            case 3: runner.withLock { $0 }?.requestReset()
            default: break
            }
        }
    }

    func run(policy: ResetPolicy, byDevice: Bool) async throws -> (reason: StopReason, boots: [UInt64], restarts: Int, prepared: Int) {
        let vm = try TestVM(code: TestGuests.resetCount)
        let device = ResetDevice()
        try vm.pio.register(device, at: GuestAddress(0x20), length: 8)
        let prepared = Atomic<Int>(0)
        let counted: ResetPolicy
        switch policy {
        case .stop: counted = .stop
        case let .restart(limit, _): counted = .restart(limit: limit) { prepared.add(1, ordering: .relaxed) }
        }
        let runner = VCPURunner(vm: vm.vm, pio: vm.pio, mmio: vm.mmio, resetPolicy: counted)
        device.runner.withLock { $0 = runner }
        // The device, on the runner's bus, reaches the runner: break that cycle at the end.
        defer { device.runner.withLock { $0 = nil } }
        let longMode = try vm.longMode()
        try runner.start(vcpuCount: 1) { vcpu throws(KVMError) in
            try longMode(vcpu)
            var registers = try vcpu.registers()
            registers.rcx = byDevice ? 1 : 0
            try vcpu.setRegisters(registers)
        }
        let (reason, timedOut) = await TestVM.wait(for: runner, timeout: .seconds(10))
        #expect(!timedOut)
        return (reason, device.boots.withLock { $0 }, runner.restartCount, prepared.load(ordering: .relaxed))
    }

    @Test("a triple fault under .restart(limit: 1) restarts once from the initial state, then stops")
    func tripleFaultRestartsOnce() async throws {
        let result = try await run(policy: .restart(limit: 1), byDevice: false)
        #expect(result.reason == .shutdown(vcpu: 0))
        // The boot count lives in guest memory, which a restart leaves alone: 1, then 2.
        #expect(result.boots == [1, 2])
        #expect(result.restarts == 1)
        #expect(result.prepared == 1)
    }

    @Test("a reset device's request follows the same policy")
    func resetRequestRestartsOnce() async throws {
        let result = try await run(policy: .restart(limit: 1), byDevice: true)
        #expect(result.reason == .resetRequested)
        #expect(result.boots == [1, 2])
        #expect(result.restarts == 1)
    }

    @Test("under .stop a reset ends the VM at once", arguments: [false, true])
    func stopPolicy(byDevice: Bool) async throws {
        let result = try await run(policy: .stop, byDevice: byDevice)
        #expect(result.reason == (byDevice ? .resetRequested : .shutdown(vcpu: 0)))
        #expect(result.boots == [1])
        #expect(result.restarts == 0)
        #expect(result.prepared == 0)
    }

    @Test("a restart limit of 3 gives four boots")
    func severalRestarts() async throws {
        let result = try await run(policy: .restart(limit: 3), byDevice: false)
        #expect(result.boots == [1, 2, 3, 4])
        #expect(result.restarts == 3)
    }

    @Test("a failing preparation stops the VM with its error")
    func failingPreparationStops() async throws {
        let vm = try TestVM(code: TestGuests.resetCount)
        let runner = VCPURunner(vm: vm.vm, pio: vm.pio, mmio: vm.mmio, resetPolicy: .restart(limit: 5) { () throws(KVMError) in
            throw .invalidArgument("cannot reload the image")
        })
        try runner.start(vcpuCount: 1, setup: try vm.longMode())
        let (reason, timedOut) = await TestVM.wait(for: runner, timeout: .seconds(10))
        #expect(!timedOut)
        #expect(reason == .failed(vcpu: 0, error: .invalidArgument("cannot reload the image")))
    }
}

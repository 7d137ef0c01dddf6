import HVTestSupport
import HVCore
import HVKVM
import Testing

/// Guests that misbehave: each must end with the right reason, with no hang or crash.
@Suite("Guests that fault, read nothing, or never stop", .requiresKVM)
struct GuestStopTests {
    @Test func tripleFaultEndsWithShutdown() async throws {
        let vm = try TestVM(code: TestGuests.tripleFault)
        let (reason, timedOut) = try await vm.run(setup: try vm.longMode())
        #expect(!timedOut)
        #expect(reason == .shutdown(vcpu: 0))
    }

    @Test func unmappedMMIOReadsAllOnesAndIsCounted() async throws {
        let vm = try TestVM(code: TestGuests.unmappedMmio)
        let port = EchoDevice()
        try vm.pio.register(port, at: GuestAddress(0x10), length: 4)
        let (reason, timedOut) = try await vm.run(setup: try vm.longMode())
        #expect(!timedOut)
        #expect(reason == .halted(vcpu: 0))
        #expect(port.writes.map(\.value) == [0xFFFF_FFFF])
        #expect(vm.mmio.unhandledReads == 1)
        #expect(vm.mmio.unhandledWrites == 1)
    }

    @Test("a guest that spins forever is kicked out by stop()")
    func spinningGuestIsKicked() async throws {
        let vm = try TestVM(code: TestGuests.spin)
        let runner = VCPURunner(vm: vm.vm, pio: vm.pio, mmio: vm.mmio)
        try runner.start(vcpuCount: 1, setup: try vm.longMode())
        try await Task.sleep(for: .milliseconds(50))
        #expect(runner.stopReason == nil, "the spinning guest stopped by itself")
        runner.stop()
        let (reason, timedOut) = await TestVM.wait(for: runner, timeout: .seconds(10))
        #expect(!timedOut, "stop() did not get the vCPU out of the guest")
        #expect(reason == .stopRequested)
    }

    @Test("an exit handler sees exits first and can stop the VM")
    func exitHandlerCanStop() async throws {
        let vm = try TestVM(code: TestGuests.longModeIo)
        let (reason, timedOut) = try await vm.run(exitHandler: { _, exit in
            if case let .ioIn(port, _, _) = exit, port == 0x10 { return .stop(.unhandledExit(vcpu: 0, exit: "test")) }
            return nil
        }, setup: try vm.longMode())
        #expect(!timedOut)
        #expect(reason == .unhandledExit(vcpu: 0, exit: "test"))
    }

    @Test("a failing setup is reported by start() and leaves no vCPU running")
    func failingSetupThrows() throws {
        let vm = try TestVM(code: TestGuests.spin)
        let runner = VCPURunner(vm: vm.vm, pio: vm.pio, mmio: vm.mmio)
        #expect(throws: KVMError.self) {
            try runner.start(vcpuCount: 2) { vcpu throws(KVMError) in
                if vcpu.id == 1 { throw KVMError.invalidArgument("setup refused") }
                try vcpu.setupLongMode(memory: vm.memory, entry: TestVM.entry)
            }
        }
        #expect(runner.stopReason != nil)
    }
}

import GuestImages
import HVDevicesTesting
import HVMachine
import HVTestSupport
import MetricsTestKit
import Testing

/// A machine's statistics reach swift-metrics with the documented labels and dimensions, and
/// publishing twice adds only what changed.
@Suite("Machine: metrics", .requiresKVM)
struct MachineMetricsTests {
    @Test func aUnikernelsExitsAndHypercallsArePublished() throws {
        let recorder = TestMetrics()
        var configuration = MachineConfiguration(memorySize: 64 << 20)
        configuration.name = "metrics-vm"
        configuration.metricsFactory = recorder
        configuration.interruptControllers = false
        let machine = try Machine(configuration)
        var services = HypercallTable()
        for service: any ParavirtService in [ConsoleService(output: CollectingSink()), ClockService(), RandomService(), LifecycleService()] {
            try services.install(service)
        }
        let result = try machine.run(.unikernel(image: GuestImages.hello, hypercalls: services))
        #expect(result.stopReason == .guestRequested(.exit(status: 0), vcpu: 0))

        // The shutdown published once; the dispatcher's own counts are the reference.
        let consoleWrites = machine.hypercallDispatcher?.statistics().first { $0.name == "console_write" }?.calls ?? 0
        #expect(consoleWrites > 0)
        let vm = ("vm", "metrics-vm")
        #expect(recorder.counterTotal(label: "hvkit_hypercalls_total", dimensions: [vm, ("call", "console_write")]) == Int64(consoleWrites))
        #expect(recorder.counterTotal(label: "hvkit_hypercall_errors_total", dimensions: [vm, ("call", "console_write")]) == 0)
        let traps = machine.statistics()[0]?.trapExits ?? 0
        #expect(traps > 0)
        #expect(recorder.counterTotal(label: "hvkit_vcpu_exits_total", dimensions: [vm, ("vcpu", "0"), ("kind", "trap")]) == Int64(traps))

        // Nothing changed since: publishing again adds nothing.
        machine.publishMetrics()
        #expect(recorder.counterTotal(label: "hvkit_hypercalls_total", dimensions: [vm, ("call", "console_write")]) == Int64(consoleWrites))
    }

    @Test func aVirtioDevicesRequestsArePublished() throws {
        let recorder = TestMetrics()
        var configuration = MachineConfiguration(memorySize: 2 << 20)
        configuration.name = "rng-vm"
        configuration.metricsFactory = recorder
        let machine = try Machine(configuration)
        let slot = try machine.add(virtio: EntropyDevice(queueSize: 8), name: "rng")
        let reports = PortRecorder()
        try machine.add(pio: reports, port: 0x10, count: 8, name: "report ports")
        try machine.load(.unikernel(image: syntheticELF(code: TestGuests.virtioRng, at: 0x1_0000), hypercalls: HypercallTable()))
        try machine.start()
        reports.waitForWrites(2, seconds: 30)
        machine.publishMetrics()
        let device = [("vm", "rng-vm"), ("device", "rng")]
        #expect(recorder.counterTotal(label: "hvkit_virtio_notifications_total", dimensions: device) == 1)
        #expect(recorder.counterTotal(label: "hvkit_virtio_requests_total", dimensions: device) == 1)
        #expect(recorder.counterTotal(label: "hvkit_virtio_rejected_requests_total", dimensions: device) == 0)
        #expect(slot.transport.queueCounts.activations == 1)
        machine.stop()
        _ = machine.wait()
        // The shutdown's publish found nothing new for the device.
        #expect(recorder.counterTotal(label: "hvkit_virtio_requests_total", dimensions: device) == 1)
    }
}

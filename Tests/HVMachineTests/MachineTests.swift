import GuestImages
import HVDevicesTesting
import Glibc
import HVMachine
import HVTestSupport
import Testing

@Suite("Machine: composition", .requiresKVM)
struct MachineTests {
    /// The README's unikernel recipe: HVKit's built-in Embedded Swift guest with its hypercall
    /// services, composed and run in a few lines.
    @Test func unikernelComposedInAFewLines() throws {
        let console = CollectingSink()
        var services = HypercallTable()
        for service: any ParavirtService in [ConsoleService(output: console), ClockService(), RandomService(), LifecycleService()] {
            try services.install(service)
        }
        let machine = try Machine(memorySize: 64 << 20)
        let result = try machine.run(.unikernel(image: GuestImages.hello, hypercalls: services))

        #expect(result.stopReason == .guestRequested(.exit(status: 0), vcpu: 0))
        #expect(result.shutdown.isClean)
        #expect(console.text.contains("Hello from Embedded Swift on HVKit!"))
    }

    /// A raw guest drives the first virtio window (an entropy device) as a driver would; its
    /// kick reaches the device through the ioeventfd the machine wired, not through an exit.
    @Test(arguments: [QueueNotifications.ioeventfd, .exit])
    func virtioDeviceIsWiredForAGuest(notifications: QueueNotifications) throws {
        let machine = try Machine(memorySize: 2 << 20)
        let slot = try machine.add(virtio: EntropyDevice(queueSize: 8), notifications: notifications)
        #expect(slot.window.start == GuestAddress(0xD000_0000))
        #expect(slot.interrupt == 5)
        #expect(slot.commandLineAnnouncement == "virtio_mmio.device=4K@0xd0000000:5")
        let reports = PortRecorder()
        try machine.add(pio: reports, port: 0x10, count: 8, name: "report ports")
        // Guests/asm/tests/virtio_rng.S, wrapped in an ELF and entered as a unikernel.
        try machine.load(.unikernel(image: syntheticELF(code: TestGuests.virtioRng, at: 0x1_0000), hypercalls: HypercallTable()))
        let watchdog = Watchdog(machine, seconds: 30)
        try machine.start()
        // The guest reports, then halts; with the in-kernel irqchip HLT waits in KVM, so the
        // test stops the machine once the report is in.
        reports.waitForWrites(2, seconds: 30)
        machine.stop()
        let result = machine.wait()
        watchdog.cancel()

        #expect(reports.values == [16, 0xF])
        #expect(slot.transport.notificationCount == 1)
        #expect(result.shutdown.devicesQuiesced == 1)
        #expect(try machine.memory.readBytes(at: GuestAddress(0xC000), count: 16).contains { $0 != 0 })
    }

    /// Two disks (on each engine), an entropy device and a virtio console composed in a few
    /// lines, driven by a tiny guest with its own drivers (Guests/tender/virtio_devices.c): it
    /// reads each disk's sector 0, writes sector 1 and flushes. The host checks the bytes in
    /// the files after the machine's orderly shutdown.
    @Test(arguments: DiskEngine.allCases)
    func twoDisksEntropyAndAConsoleDrivenByATinyGuest(engine: DiskEngine) throws {
        let disks = try (0..<2).map { number throws(Errno) in
            try ScratchFile(size: 64 << 10, contents: [(0, Array("disk \(number)".utf8))])
        }
        let serial = CollectingSink(), hvc = CollectingSink()
        var services = HypercallTable()
        try services.install(ConsoleService(output: serial))
        try services.install(LifecycleService())

        let machine = try Machine(memorySize: 16 << 20)
        for disk in disks { try machine.addDisk(path: disk.path, engine: engine) }
        try machine.addEntropy()
        try machine.addConsole(output: hvc)
        let first = try #require(machine.virtioDevices.first).window.start.rawValue
        let argument = (first >> 12) << 32 | UInt64(machine.virtioDevices.count)
        let watchdog = Watchdog(machine, seconds: 120)
        let result = try machine.run(.unikernel(image: GuestImages.virtioDevices, hypercalls: services, argument: argument))
        watchdog.cancel()

        #expect(result.stopReason == .guestRequested(.exit(status: 0), vcpu: 0), "\(serial.text)")
        #expect(result.shutdown.isClean && result.shutdown.disksFlushed.count == 2, "\(result.shutdown)")
        #expect(serial.text.contains("disk sector 0: disk 0 (128 sectors)"), "\(serial.text)")
        #expect(serial.text.contains("disk sector 0: disk 1 (128 sectors)"), "\(serial.text)")
        #expect(serial.text.contains("devices driven: 2 disks, 1 entropy, 1 console, 0 failures"), "\(serial.text)")
        #expect(hvc.text == "hello through virtio-console\n")
        for (number, disk) in disks.enumerated() {
            let written = Array("written by the guest to disk \(number)".utf8)
            #expect(try disk.read(at: 512, count: written.count) == written, "disk \(number)'s sector 1")
            #expect(try disk.read(at: 0, count: 6) == Array("disk \(number)".utf8), "disk \(number)'s sector 0 is intact")
        }
    }

    @Test func thirtyTwoDevicesGetDisjointWindowsAndEveryOneAnInterrupt() throws {
        let machine = try Machine(memorySize: 2 << 20)
        var slots: [VirtioSlot] = []
        for _ in 0..<32 { slots.append(try machine.addEntropy()) }
        for (index, slot) in slots.enumerated() {
            for other in slots[(index + 1)...] { #expect(!slot.window.overlaps(other.window)) }
            #expect(MachineConfiguration.defaultDeviceInterrupts.contains(slot.interrupt))
        }
        // Every configured line is used once before any is shared.
        let first = slots.prefix(MachineConfiguration.defaultDeviceInterrupts.count).map(\.interrupt)
        #expect(first == MachineConfiguration.defaultDeviceInterrupts)
        #expect(Set(slots.map(\.window.start)).count == 32)
        #expect(machine.virtioDevices.count == 32)
    }

    @Test func aFailingStepNamesTheDevice() throws {
        let machine = try Machine(memorySize: 2 << 20)
        let error = #expect(throws: MachineError.self) {
            try machine.addDisk(path: "/nonexistent/disk.img", name: "root")
        }
        #expect(error?.step == .openDisk)
        #expect(error?.device == "virtio-blk root")
        #expect(error?.description.contains("/nonexistent/disk.img") == true)
    }

    @Test func devicesCannotBeAddedOnceTheGuestIsLoaded() throws {
        let machine = try Machine(memorySize: 64 << 20)
        try machine.load(.unikernel(image: GuestImages.hello, hypercalls: HypercallTable()))
        let error = #expect(throws: MachineError.self) { try machine.addEntropy() }
        #expect(error?.step == .addDevice)
        let again = #expect(throws: MachineError.self) {
            try machine.load(.unikernel(image: GuestImages.hello, hypercalls: HypercallTable()))
        }
        #expect(again?.step == .loadGuest)
    }

    @Test func startingWithoutAGuestIsRefused() throws {
        let machine = try Machine(memorySize: 2 << 20)
        let error = #expect(throws: MachineError.self) { try machine.start() }
        #expect(error?.step == .start)
        #expect(machine.wait().shutdown.ran == false)
    }

    @Test func anUnreadableKernelIsReportedByPath() throws {
        let machine = try Machine(memorySize: 64 << 20)
        let error = #expect(throws: MachineError.self) { try machine.load(.linux(kernel: "/nonexistent/vmlinux")) }
        #expect(error?.step == .readImage)
        #expect(error?.description.contains("/nonexistent/vmlinux") == true)
    }

    @Test func badConfigurationsAreRefusedWithTheReason() {
        #expect(throws: MachineError.self) { try Machine(memorySize: 4096) }
        #expect(throws: MachineError.self) { try Machine(memorySize: 64 << 20, vcpuCount: 0) }
        var configuration = MachineConfiguration()
        configuration.deviceAreaStart = GuestAddress(0x1000)
        #expect(throws: MachineError.self) { try Machine(configuration) }
    }
}

/// Records port writes (offset 0 and 4 of the report ports) and lets a test wait for them.
final class PortRecorder: BusDevice {
    private let writes = Locked<[UInt64]>([])
    func read(offset: UInt64, width: AccessWidth) -> UInt64 { 0 }
    func write(offset: UInt64, width: AccessWidth, value: UInt64) { writes.withLock { $0.append(value) } }
    var values: [UInt64] { writes.withLock { $0 } }

    func waitForWrites(_ count: Int, seconds: Int) {
        for _ in 0..<(seconds * 100) where values.count < count {
            var pause = timespec(tv_sec: 0, tv_nsec: 10_000_000)
            nanosleep(&pause, nil)
        }
    }
}

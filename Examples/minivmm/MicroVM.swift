import ArgumentParser
import Glibc
import GuestImages
import HVCore
import HVDevices
import HVKVM
import HVParavirt
import SystemPackage

/// The command line, checked and with the files it names read.
struct VMOptions {
    struct Disk { var path: String; var readOnly: Bool }

    var kernel: [UInt8]?
    var initrd: [UInt8]?
    var commandLine: String
    var memoryBytes: UInt64
    var cpus: Int
    var disks: [Disk]
    var console: any ByteSink
    var rng: Bool
    var bootTimer: Bool
    var extract: Bool
    /// nil: PVH when the kernel has the note, else the 64-bit protocol.
    var bootProtocol: LinuxBootProtocol?

    init(command: MiniVMM) throws {
        if let path = command.kernel {
            guard let bytes = readBinaryFile(path) else { throw ValidationError("cannot read the kernel \(path)") }
            kernel = bytes
        }
        if let path = command.initrd {
            guard let bytes = readBinaryFile(path) else { throw ValidationError("cannot read the initrd \(path)") }
            initrd = bytes
        }
        commandLine = command.cmdline
        guard (16...65536).contains(command.memory) else { throw ValidationError("--memory \(command.memory): 16 to 65536 MiB") }
        memoryBytes = command.memory << 20
        guard (1...254).contains(command.cpus) else { throw ValidationError("--cpus \(command.cpus): 1 to 254") }
        cpus = command.cpus
        disks = try command.disk.map { value in
            let parts = value.split(separator: ",").map(String.init)
            guard let path = parts.first, parts.count <= 2, parts.count == 1 || parts[1] == "readonly" else {
                throw ValidationError("--disk \(value): PATH or PATH,readonly")
            }
            return Disk(path: path, readOnly: parts.count == 2)
        }
        switch command.console {
        case "stdio": console = FileDescriptorSink(.standardOutput)
        case let value where value.hasPrefix("file:"):
            let path = String(value.dropFirst(5))
            do {
                console = FileDescriptorSink(try FileDescriptor.open(FilePath(path), .writeOnly, options: [.create, .truncate],
                                                                     permissions: [.ownerReadWrite, .groupRead, .otherRead]))
            } catch { throw ValidationError("--console \(value): \(error)") }
        default: throw ValidationError("--console \(command.console): stdio or file:PATH")
        }
        rng = command.rng
        bootTimer = command.bootTimer
        extract = !command.noExtract
        switch command.boot {
        case "auto": bootProtocol = nil
        case "linux64": bootProtocol = .linux64
        case "pvh": bootProtocol = .pvh
        default: throw ValidationError("--boot \(command.boot): auto, linux64 or pvh")
        }
    }
}

/// How the VM ended, as minivmm reports it.
struct Outcome {
    var status: Int32
    var message: String
}

/// The machine: RAM, legacy devices on port I/O, virtio-mmio devices, and the boot.
final class MicroVM {
    static let virtioBase: UInt64 = 0xD000_0000
    static let firstVirtioIRQ: UInt32 = 5
    static let serialIRQ: UInt32 = 4
    static let bootTimerPort: UInt64 = 0x3F0
    /// The boot timer's page, announced as hvkit.boot_timer= for the init's `devmem` write.
    static let bootTimerMMIO: UInt64 = 0xD100_0000

    let vm: VirtualMachine
    let memory: GuestMemoryMmap
    let runner: VCPURunner
    let events: EventLoop
    let blocks: [(device: BlockDevice, disk: DiskImage)]
    let plan: LinuxBootPlan
    let cpu: GuestCPUModel
    let vcpuCount: Int
    let started = HostClock.monotonicNanoseconds()
    /// One line on what is booted and how, for the user.
    let summary: String

    init(_ options: VMOptions) throws {
        let kvm = try KVM()
        vm = try kvm.createVM()
        // RAM below the 32-bit device hole (3 GiB up), the rest above 4 GiB. Mapped before the
        // irqchip exists, which saves about 10 ms (see VirtualMachine.createIRQChip).
        let low = min(options.memoryBytes, 3 << 30)
        var regions = [MemoryRegionSpec(start: GuestAddress(0), size: low, options: [.noReserve])]
        if options.memoryBytes > low {
            regions.append(MemoryRegionSpec(start: GuestAddress(4 << 30), size: options.memoryBytes - low, options: [.noReserve]))
        }
        memory = try GuestMemoryMmap(regions)
        try vm.map(memory)
        try vm.createIRQChip()
        try vm.createPIT()
        events = try EventLoop(name: "minivmm-io")

        // Legacy devices. The i8042's reset and a triple fault end the VM (ResetPolicy.stop).
        let pio = Bus(space: .pio)
        let mmio = Bus(space: .mmio)
        let resetTarget = RunnerReference()
        try pio.register(Serial16550(output: options.console, interrupt: try vm.makeInterruptLine(gsi: Self.serialIRQ)),
                         at: GuestAddress(0x3F8), length: 8)
        try pio.register(I8042Controller { resetTarget.runner?.requestReset() }, at: GuestAddress(0x60), length: 5)
        try pio.register(CMOSClock(), at: GuestAddress(0x70), length: 2)
        // virtio-mmio devices, each announced on the command line.
        var announcements: [String] = []
        if options.bootTimer {
            let timer = BootTimer(start: started) { elapsed in
                print("minivmm: guest boot done after \(Int(elapsed / .milliseconds(1))) ms")
                fflush(nil)
            }
            try pio.register(timer, at: GuestAddress(Self.bootTimerPort), length: 1)
            try mmio.register(timer, at: GuestAddress(Self.bootTimerMMIO), length: BootTimer.windowSize)
            announcements.append("hvkit.boot_timer=0x\(String(Self.bootTimerMMIO, radix: 16))")
        }
        var acpiDevices: [ACPITables.VirtioMMIODevice] = []
        var blocks: [(BlockDevice, DiskImage)] = []
        var virtioDevices: [any VirtioDevice] = []
        for disk in options.disks {
            let image = try DiskImage(path: disk.path, readOnly: disk.readOnly)
            let device = BlockDevice(backend: try AIOBlockBackend(disk: image, eventLoop: events))
            blocks.append((device, image))
            virtioDevices.append(device)
        }
        if options.rng { virtioDevices.append(EntropyDevice()) }
        for (index, device) in virtioDevices.enumerated() {
            let base = Self.virtioBase + UInt64(index) * 0x1000
            let irq = Self.firstVirtioIRQ + UInt32(index)
            let transport = VirtioMMIODevice(device: device, memory: memory, interruptLine: try vm.makeInterruptLine(gsi: irq))
            try mmio.register(transport, at: GuestAddress(base), length: VirtioMMIODevice.windowSize)
            announcements.append("virtio_mmio.device=4K@0x\(String(base, radix: 16)):\(irq)")
            acpiDevices.append(ACPITables.VirtioMMIODevice(base: base, interrupt: irq))
        }
        self.blocks = blocks

        // The kernel, or the built-in guest with the hypercall services it uses.
        var traps: [TrapSite: any RegisterTrap] = [:]
        let kernel: LinuxKernel
        let kernelKind: String
        if let bytes = options.kernel {
            let parsed = try LinuxKernel(bytes: bytes)
            if case let .bzImage(image) = parsed, options.extract {
                kernel = try LinuxKernel(extracting: image)
                kernelKind = "a bzImage extracted on the host (\(image.compression?.rawValue ?? "?"))"
            } else {
                kernel = parsed
                if case .bzImage = parsed { kernelKind = "a bzImage (its own decompressor)" } else { kernelKind = "an ELF kernel" }
            }
        } else {
            kernel = try LinuxKernel(bytes: GuestImages.hello)
            kernelKind = "the built-in guest"
            var table = HypercallTable()
            for service: any ParavirtService in [ConsoleService(output: options.console), ClockService(), RandomService(), LifecycleService()] {
                try table.install(service)
            }
            traps = HypercallDispatcher(memory: memory, table: table).trapSites
        }
        // The devices and vCPUs are announced three ways, for kernels built to read any one:
        // ACPI (Debian's cloud kernel reads only this), the command line and an MP table.
        let acpi = try ACPITables(vcpuCount: options.cpus, virtioDevices: acpiDevices)
        try acpi.write(to: memory)
        try MPTable(vcpuCount: options.cpus).write(to: memory)
        let commandLine = ([options.commandLine] + announcements).joined(separator: " ")
        plan = try LinuxLoader.load(kernel, commandLine: commandLine, initrd: options.initrd, into: memory, acpiRoot: acpi.address,
                                    bootProtocol: options.bootProtocol)
        vcpuCount = options.cpus
        let entry = plan.bootProtocol == .pvh ? "PVH" : "the 64-bit boot protocol"
        let devices = (options.disks.isEmpty ? [] : ["\(options.disks.count) disk(s)"]) + (options.rng ? ["rng"] : [])
        summary = (["\(kernelKind) by \(entry) at \(plan.entry)", "\(options.cpus) vCPU(s)", "\(options.memoryBytes >> 20) MiB"]
            + devices).joined(separator: ", ")

        var cpu = try GuestCPUModel(kvm: kvm, vcpuCount: options.cpus)
        // This machine's software hypervisor (PVM) does not emulate cmpxchg16b; Linux runs
        // without it.
        cpu.removeFeature(.cx16)
        self.cpu = cpu
        runner = VCPURunner(vm: vm, pio: pio, mmio: mmio, traps: traps, resetPolicy: .stop)
        resetTarget.runner = runner
    }

    /// Runs the guest until it ends or minivmm gets SIGINT or SIGTERM; flushes the disks.
    func run(signals: SignalWatcher) -> Outcome {
        signals.watch { [runner] in runner.stop() }
        let (plan, memory, cpu) = (self.plan, self.memory, self.cpu)
        do {
            try runner.start(vcpuCount: vcpuCount) { vcpu throws(KVMError) in
                try vcpu.setCPUID(cpu.entries(forVCPU: vcpu.id))
                // The others wait in KVM_RUN for the guest's startup IPI.
                guard vcpu.id == 0 else { return }
                try vcpu.setupLinuxBoot(plan, memory: memory)
                // The vCPU enters the guest right after this.
                Report.firstRun.withLock { $0 = HostClock.monotonicNanoseconds() }
            }
        } catch {
            return Outcome(status: 1, message: "the vCPU could not start: \(error)")
        }
        let reason = runner.join()
        Report.write(memory: memory)
        // Nothing lost: every request the guest queued completes, then reaches the disk.
        for (device, disk) in blocks {
            device.reset()
            if !disk.isReadOnly { _ = fdatasync(disk.fileDescriptor.rawValue) }
        }
        events.shutdown()
        switch reason {
        case let .guestRequested(.exit(status), _): return Outcome(status: status, message: "the guest exited with status \(status)")
        case let .guestRequested(.abort(message), _): return Outcome(status: 255, message: "the guest aborted: \(message)")
        case .resetRequested, .systemEvent(.reset, _): return Outcome(status: 0, message: "the guest asked for a reset; stopped")
        case .systemEvent(.shutdown, _): return Outcome(status: 0, message: "the guest powered off")
        case let .shutdown(vcpu): return Outcome(status: 2, message: "vCPU \(vcpu) triple-faulted; stopped")
        case .stopRequested where signals.fired: return Outcome(status: 130, message: "stopped by a signal; disks flushed")
        default: return Outcome(status: 1, message: "stopped: \(reason)")
        }
    }
}

/// The runner, for devices made before it (the i8042's reset line).
final class RunnerReference: @unchecked Sendable {
    // SAFETY: written once, before any vCPU runs (so before any device can read it).
    var runner: VCPURunner?
}

// Every ```swift block of README.md, verbatim, inside functions that give it what it names
// (ReadmeTests checks that each block appears here, or in the guest source it quotes, line for
// line). So a README snippet that stops compiling fails the build; the ones that can run on
// this machine are run by ReadmeTests.
import HVMachine

enum ReadmeSnippets {
    /// "Compose a VM".
    static func composeAVM(kernelPath: String, initrdPath: String, diskPath: String) throws -> MachineResult {
        let machine = try Machine(memorySize: 256 << 20)
        try machine.addLegacyDevices(console: FileDescriptorSink(.standardOutput))   // 16550, i8042, CMOS
        try machine.addDisk(path: diskPath)
        try machine.addEntropy()
        try machine.load(.linux(kernel: kernelPath, initrd: initrdPath))             // bzImage or vmlinux
        try machine.start()
        let result = machine.wait()      // "reset requested; 2 device(s) quiesced, 1 disk(s) flushed"
        return result
    }

    /// "Compose a VM": a network interface.
    static func network(machine: Machine) throws {
        let net = try machine.addNetwork(tap: "hv0", mac: MACAddress("52:54:00:12:34:56") ?? .random(),
                                         transmitRateLimit: RateLimit(bandwidth: .init(size: 12_500_000, refillTime: .seconds(1))))
        try machine.addNetwork(stream: "/tmp/passt.socket")
        print(net.device.counts)         // frames and bytes each way, and what was dropped and why
    }

    /// "Compose a VM": vsock.
    static func vsock(machine: Machine, serve: @escaping @Sendable (FileDescriptor) -> Void) throws -> FileDescriptor {
        let vsock = try machine.addVsock(guestCID: 3, socketPath: "/tmp/vm.vsock")
        vsock.listen(port: 1024) { connection in serve(connection) }   // the guest connects to host port 1024
        let agent = try vsock.connect(toGuestPort: 52)                 // a socket to the guest's port 52
        return agent
    }

    /// "Compose a VM": snapshots.
    static func snapshot(machine: Machine, diskPath: String) throws -> Machine {
        try machine.snapshot(to: "/var/lib/vm/snap")                        // pause, save, resume
        let snapshot = try MachineSnapshot(directory: "/var/lib/vm/snap")   // checked: magic, version, CRC-64
        let clone = try Machine(restoring: snapshot)                        // RAM mapped copy-on-write
        try clone.addLegacyDevices(console: FileDescriptorSink(.standardOutput))
        try clone.addDisk(path: diskPath)                                   // the same devices, in order
        try clone.restore()
        try clone.start()
        return clone
    }

    /// "Compose a VM": the unikernel.
    static func unikernel(guestPath: String, diskPath: String) throws -> (MachineResult, [HypercallStatistics]) {
        var services = HypercallTable()
        for service: any ParavirtService in [ConsoleService(output: FileDescriptorSink(.standardOutput)), ClockService(),
                                            RandomService(), LifecycleService(), try BlockService(path: diskPath)] {
            try services.install(service)
        }
        try services.register(.userBase, name: "answer") { _ throws(HypercallError) in .value(42) }
        var configuration = MachineConfiguration(memorySize: 16 << 20)
        configuration.interruptControllers = false                // its HLT exits, as on Solo5's hvt
        let unikernel = try Machine(configuration)
        let ended = try unikernel.run(.unikernel(path: guestPath, hypercalls: services))
        print(ended.stopReason)                                    // "vCPU 0: guest asked to exit with status 0"
        print(unikernel.hypercallDispatcher?.statistics() ?? [])   // calls, errors, latency per hypercall
        return (ended, unikernel.hypercallDispatcher?.statistics() ?? [])
    }

    /// "Lower down: composing by hand".
    static func byHand(guestCode: [UInt8], myConsole: any BusDevice) throws {
        let kvm = try KVM()
        let vm = try kvm.createVM()
        let memory = try GuestMemoryMmap(size: 2 << 20)          // 2 MiB of RAM at guest address 0
        try vm.map(memory)
        try memory.write(guestCode, to: GuestAddress(0x10000))

        let pio = Bus(space: .pio)
        try pio.register(myConsole, port: 0xE9, count: 1)   // any BusDevice; ports are not addresses

        let cpuid = try kvm.supportedCPUID()
        let runner = VCPURunner(vm: vm, pio: pio, mmio: Bus(space: .mmio))
        try runner.start(vcpuCount: 1) { vcpu throws(KVMError) in
            try vcpu.setCPUID(cpuid)
            try vcpu.setupLongMode(memory: memory, entry: GuestAddress(0x10000), stackPointer: 0x20_0000)
        }
        print(runner.join())   // "vCPU 0 halted"; runner.stop() from any thread kicks every vCPU out
    }

    /// "Lower down": booting Linux by hand.
    static func linuxByHand(bzImageBytes: [UInt8], initrd: [UInt8], memory: GuestMemoryMmap, linuxRunner: VCPURunner,
                            cpuModel: GuestCPUModel) throws {
        let kernel = try LinuxKernel(extracting: BzImage(bytes: bzImageBytes))   // or LinuxKernel(bytes: vmlinux)
        let acpi = try ACPITables(vcpuCount: 2, virtioDevices: [.init(base: 0xD000_0000, interrupt: 5)])
        try acpi.write(to: memory)
        let plan = try LinuxLoader.plan(kernel, commandLine: "console=ttyS0", initrdSize: initrd.count,
                                        memory: memory, acpiRoot: acpi.address)   // PVH if the kernel has the note
        try LinuxLoader.check(plan)                                               // nothing overlaps
        try LinuxLoader.write(plan, kernel: kernel, commandLine: "console=ttyS0", initrd: initrd, into: memory)
        print(plan.bootProtocol, plan.entry)                                      // pvh 0x1000850
        try linuxRunner.start(vcpuCount: 2) { vcpu throws(KVMError) in
            try vcpu.setCPUID(cpuModel.entries(forVCPU: vcpu.id))
            if vcpu.id == 0 { try vcpu.setupLinuxBoot(plan, memory: memory) }    // the others wait for INIT/SIPI
        }
    }

    /// "Scheduling vCPUs".
    static func scheduling(vm: VirtualMachine, otherVM: VirtualMachine, pio: Bus, mmio: Bus, memory: GuestMemoryMmap,
                           entry: GuestAddress, dispatcher: HypercallDispatcher,
                           reloadImage: @escaping @Sendable () throws(KVMError) -> Void) async throws {
        // A thread per vCPU: 4 vCPUs, each at its own entry and stack, pinned one per host CPU; a
        // triple fault or a reset request restarts the guest from its initial state once, then stops.
        let smp = VCPURunner(vm: vm, pio: pio, mmio: mmio, resetPolicy: .restart(limit: 1) { () throws(KVMError) in try reloadImage() },
                             placement: .spread([0, 1]))
        try smp.start(vcpuCount: 4) { vcpu throws(KVMError) in
            try vcpu.setupLongMode(memory: memory, entry: entry, stackPointer: 0x8000 - UInt64(vcpu.id) * 0x1000,
                                   argument: UInt64(vcpu.id))
        }
        smp.pause()                                                // every vCPU out of KVM_RUN, parked
        let rip = smp.withPausedVCPU(0) { vcpu in try? vcpu.registers().rip }
        smp.resume()
        let reason = await smp.wait()                              // or smp.join()

        // M:N: 100 VMs on 2 workers, 4 ms slices, a VM of weight 2 runs 2 slices per turn.
        let scheduler = try VCPUScheduler(workers: 2, timeSlice: .milliseconds(4))
        let small = try scheduler.add(otherVM, pio: pio, mmio: mmio, traps: dispatcher.trapSites, weight: 2,
                                      halts: .sleep(timeout: nil)) { vcpu throws(KVMError) in try vcpu.setupLongMode(memory: memory, entry: entry) }
        print(await small.wait(), small.statistics())              // slices, moves between workers, exits
        scheduler.shutdown()
        _ = (rip, reason)
    }
}

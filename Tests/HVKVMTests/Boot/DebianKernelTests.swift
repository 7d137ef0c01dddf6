import Glibc
import HVCore
import HVDevices
import SystemPackage
import Testing
@testable import HVBoot
@testable import HVKVM

/// Debian's cloud kernel, from `make artifacts` (or HVKIT_KERNEL): parsed, extracted on the
/// host, and booted on this machine's KVM as far as early boot goes. Skipped, with the reason,
/// where the kernel is absent.
@Suite struct DebianKernelTests {
    static let path: String = {
        if let path = getenv("HVKIT_KERNEL") { return String(cString: path) }
        return "/var/tmp/hvkit-artifacts/vmlinuz"
    }()
    static let image: [UInt8]? = readFile(path)
    static var missing: Comment { Comment(rawValue: "needs a kernel at \(path): run `make artifacts` or set HVKIT_KERNEL") }

    /// A VM for Linux: the in-kernel irqchip and PIT, and `memorySize` bytes of RAM at 0.
    static func linuxMachine(memorySize: UInt64) throws -> (KVM, VirtualMachine, GuestMemoryMmap) {
        let kvm = try KVM()
        let vm = try kvm.createVM()
        let memory = try GuestMemoryMmap([MemoryRegionSpec(start: GuestAddress(0), size: memorySize)])
        try vm.map(memory)
        try vm.createIRQChip()
        try vm.createPIT()
        return (kvm, vm, memory)
    }

    static func readFile(_ path: String) -> [UInt8]? {
        try? HostFile.readAll(FilePath(path))
    }

    @Test("the real bzImage parses and its payload extracts to an ELF kernel", .enabled(if: image != nil, missing))
    func parsesAndExtracts() throws {
        let bzImage = try BzImage(bytes: try #require(Self.image))
        #expect(bzImage.header.version >= 0x020C)
        #expect(bzImage.header.xloadFlags & 1 != 0)
        #expect(bzImage.compression != nil)
        guard case let .elf(elf) = try LinuxKernel(extracting: bzImage) else {
            Issue.record("not an ELF")
            return
        }
        #expect(elf.entry.rawValue >= 0x10_0000)
        #expect(elf.loadedRange.map { $0.length } ?? 0 > 1 << 20)
    }

    // The banner comes after about 16.5 s here, alone: QEMU microvm takes 16.4 s to the same
    // banner (shared/DESIGN.md). The CPU count comes some seconds later. The extracted kernel
    // carries a PVH note, so it boots both ways: the 64-bit protocol with a zero page, and
    // PVH (QEMU's way) with a start info.
    @Test("the extracted kernel boots to its banner, our command line, our e820 map and the ACPI tables' 2 vCPUs (bounded to 2 minutes)",
          .enabled(if: image != nil && kvmAvailable, missing), arguments: [LinuxBootProtocol.linux64, .pvh])
    func bootsToTheBanner(bootProtocol: LinuxBootProtocol) async throws {
        let kernel = try LinuxKernel(extracting: BzImage(bytes: try #require(Self.image)))
        let (kvm, vm, memory) = try Self.linuxMachine(memorySize: 256 << 20)
        let commandLine = "console=ttyS0 earlyprintk=serial,ttyS0 hvkit.test=1"
        // Two vCPUs and a virtio-mmio device, described by ACPI (this kernel reads no MP table).
        let acpi = try ACPITables(vcpuCount: 2, virtioDevices: [ACPITables.VirtioMMIORecord(base: 0xD000_0000, interrupt: 5)])
        try acpi.write(to: memory)
        let plan = try LinuxLoader.load(kernel, commandLine: commandLine, into: memory, acpiRoot: acpi.address,
                                        bootProtocol: bootProtocol)
        #expect(plan.bootProtocol == bootProtocol)

        let console = SerialLog()
        let pio = Bus(space: .pio)
        try pio.register(Serial16550(output: console), at: GuestAddress(0x3F8), length: 8)
        var cpu = try GuestCPUModel(kvm: kvm, vcpuCount: 2)
        cpu.removeFeature(.cx16)  // this host's software hypervisor does not emulate cmpxchg16b
        let model = cpu
        let runner = VCPURunner(vm: vm, pio: pio, mmio: Bus(space: .mmio))
        let started = ContinuousClock.now
        try runner.start(vcpuCount: 2) { vcpu throws(KVMError) in
            try vcpu.setCPUID(model.entries(forVCPU: vcpu.id))
            // vCPU 1 waits in KVM_RUN for a startup IPI.
            if vcpu.id == 0 { try vcpu.setupLinuxBoot(plan, memory: memory) }
        }
        // Until the kernel has counted its CPUs (from the MADT, after the e820 map), the VM
        // stops, or 2 minutes pass.
        while ContinuousClock.now - started < .seconds(120), runner.stopReason == nil,
              !console.lines.contains(where: { $0.contains("smpboot: Allowing") }) {
            try await Task.sleep(for: .milliseconds(100))
        }
        let elapsed = ContinuousClock.now - started
        runner.stop()
        let reason = runner.join()
        let output = console.text
        let lastLine = console.lines.last ?? "(nothing)"
        #expect(output.contains("Linux version"), "no banner after \(elapsed) (\(reason)); last line: \(lastLine)")
        #expect(output.contains("Command line: \(commandLine)"), "command line not seen after \(elapsed); last line: \(lastLine)")
        #expect(!output.contains("A valid RSDP was not found"), "the ACPI tables were not found")
        #expect(output.contains("ACPI: DSDT"), "no DSDT; last line: \(lastLine)")
        #expect(output.contains("smpboot: Allowing 2 CPUs"), "the kernel did not count 2 CPUs after \(elapsed); last line: \(lastLine)")
        for entry in plan.memoryMap {
            let text = "BIOS-e820: [mem 0x\(hex16(entry.start))-0x\(hex16(entry.start + entry.length - 1))] usable"
            #expect(output.contains(text), "missing \(text) after \(elapsed); last line: \(lastLine)")
        }
    }

    func hex16(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, 16 - digits.count)) + digits
    }
}

/// What the guest wrote to its serial port.
final class SerialLog: ByteSink {
    private let bytes = Locked<[UInt8]>([])
    func write(_ buffer: UnsafeRawBufferPointer) { bytes.withLock { $0.append(contentsOf: buffer) } }
    var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
    /// Split at line feeds, carriage returns dropped. (A String would keep "\r\n" together as
    /// one Character, so its split at "\n" finds nothing.)
    var lines: [String] {
        bytes.withLock { $0 }.split(separator: 10).map { String(decoding: $0.filter { $0 != 13 }, as: UTF8.self) }
    }
}

/// The whole boot, to the initramfs's result line: the kernel finds the virtio-mmio block and
/// entropy devices through ACPI, its init loads the virtio modules, lists the devices, reads
/// the disk's marker and powers off. Guest code runs at hardware speed only where the host
/// has VMX or SVM; under this machine's software hypervisor it would take far too long, so the
/// test is enabled only there.
@Suite struct DebianFullBootTests {
    static let initramfs = "/var/tmp/hvkit-artifacts/initramfs.cpio.gz"
    static let hardwareVirtualization = HostVirtualization.current.isHardwareAssisted
    static var reason: Comment {
        Comment(rawValue: hardwareVirtualization
            ? "needs `make artifacts` (\(DebianKernelTests.path) and \(initramfs))"
            : "needs a host with hardware virtualization (vmx or svm in /proc/cpuinfo); this one emulates guest code")
    }

    @Test("Debian's kernel boots to the initramfs's result line with virtio block and rng (bounded to 5 minutes)",
          .enabled(if: hardwareVirtualization && kvmAvailable && DebianKernelTests.image != nil
                       && DebianKernelTests.readFile(initramfs) != nil, reason))
    func bootsToTheResultLine() async throws {
        let kernel = try LinuxKernel(extracting: BzImage(bytes: try #require(DebianKernelTests.image)))
        let initrd = try #require(DebianKernelTests.readFile(Self.initramfs))
        let (kvm, vm, memory) = try DebianKernelTests.linuxMachine(memorySize: 512 << 20)

        // A disk whose first bytes are the marker the init reads.
        let diskPath = "/tmp/hvkit-fullboot-\(getpid()).img"
        defer { unlink(diskPath) }
        var contents = [UInt8](repeating: 0, count: 1 << 20)
        contents.replaceSubrange(0..<16, with: Array("HVKIT-MARKER-42\0".utf8))
        guard let file = fopen(diskPath, "wb") else { Issue.record("cannot create \(diskPath)"); return }
        fwrite(contents, 1, contents.count, file)
        fclose(file)

        let events = try EventLoop(name: "fullboot-io")
        defer { events.shutdown() }
        let console = SerialLog()
        let pio = Bus(space: .pio)
        let mmio = Bus(space: .mmio)
        try pio.register(Serial16550(output: console, interrupt: try vm.makeInterruptLine(gsi: 4)), at: GuestAddress(0x3F8), length: 8)
        let devices: [any VirtioDevice] = [
            BlockDevice(backend: try AIOBlockBackend(disk: try DiskImage(path: diskPath, readOnly: true), eventLoop: events)),
            EntropyDevice(),
        ]
        var declared: [ACPITables.VirtioMMIORecord] = []
        for (index, device) in devices.enumerated() {
            let base = 0xD000_0000 + UInt64(index) * 0x1000
            let irq = UInt32(5 + index)
            let transport = VirtioMMIOTransport(device: device, memory: memory, interruptLine: try vm.makeInterruptLine(gsi: irq))
            try mmio.register(transport, at: GuestAddress(base), length: VirtioMMIOTransport.windowSize)
            declared.append(ACPITables.VirtioMMIORecord(base: base, interrupt: irq))
        }
        let acpi = try ACPITables(vcpuCount: 1, virtioDevices: declared)
        try acpi.write(to: memory)
        let plan = try LinuxLoader.load(kernel, commandLine: "console=ttyS0 reboot=k panic=1", initrd: initrd, into: memory,
                                        acpiRoot: acpi.address)
        let cpu = try GuestCPUModel(kvm: kvm, vcpuCount: 1)
        let runner = VCPURunner(vm: vm, pio: pio, mmio: mmio)
        try runner.start(vcpuCount: 1) { vcpu throws(KVMError) in
            try vcpu.setCPUID(cpu.entries(forVCPU: vcpu.id))
            try vcpu.setupLinuxBoot(plan, memory: memory)
        }
        let started = ContinuousClock.now
        while ContinuousClock.now - started < .seconds(300), runner.stopReason == nil,
              !console.lines.contains(where: { $0.hasPrefix("HVKIT-RESULT") }) {
            try await Task.sleep(for: .milliseconds(200))
        }
        runner.stop()
        _ = runner.join()
        let result = console.lines.first { $0.hasPrefix("HVKIT-RESULT") }
        #expect(result == "HVKIT-RESULT virtio-devices=2 marker=HVKIT-MARKER-42", "last line: \(console.lines.last ?? "(nothing)")")
    }
}

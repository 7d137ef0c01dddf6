/// HVMachine: a whole virtual machine as one value. What every VMM repeats lives here once:
/// RAM with the 32-bit hole, mapped before the irqchip; an allocator for MMIO windows and
/// interrupts; virtio devices wired with irqfd and ioeventfds and announced to the guest on the
/// command line and in ACPI; the legacy PC devices; booting Linux or a unikernel; running on a
/// thread per vCPU or a shared scheduler; and a shutdown that loses nothing.
///
/// ```swift
/// import HVMachine
///
/// let machine = try Machine(memorySize: 256 << 20)
/// try machine.addLegacyDevices(console: FileDescriptorSink(.standardOutput))
/// try machine.addDisk(path: "disk.img")
/// try machine.addEntropy()
/// try machine.load(.linux(kernel: "vmlinux", initrd: "initramfs.cpio"))
/// try machine.start()
/// print(machine.wait())
/// ```
///
/// `import HVMachine` brings HVCore, HVBoot, HVKVM, HVDevices, HVParavirt and swift-system's
/// types with it. See ``Machine`` for the steps, ``MachineConfiguration`` for the choices,
/// ``MachineError`` for what can fail, and ``MachineResult`` for how a machine ended.
public enum HVMachine {}

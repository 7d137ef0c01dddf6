import HVBoot
import HVCore
import HVKVM
import HVParavirt

/// What ``Machine/load(_:)`` put into the guest, for reports.
public struct LoadedGuest: Sendable, CustomStringConvertible {
    /// What was booted, in words ("an ELF kernel", "a bzImage extracted on the host (xz)").
    public let kind: String
    /// Where the first vCPU enters.
    public let entry: GuestAddress
    /// For a Linux guest: the protocol, the command line as written (with the device
    /// announcements) and everything the loader placed; nil for a unikernel.
    public let linuxPlan: LinuxBootPlan?
    /// The full command line a Linux guest got.
    public let commandLine: String?

    /// What was booted, how, and where it is entered.
    public var description: String {
        guard let plan = linuxPlan else { return "\(kind) at \(entry)" }
        let entry = plan.bootProtocol == .pvh ? "PVH" : "the 64-bit boot protocol"
        return "\(kind) by \(entry) at \(plan.entry)"
    }
}

extension Machine {
    /// Loads `source` into guest RAM and fixes the device set: a Linux kernel gets its
    /// command line with every virtio device announced, ACPI tables (RSDP, MADT and a DSDT
    /// declaring the devices) and an MP table, so that kernels built to read any one of them
    /// find the devices and vCPUs; a unikernel is loaded at its physical addresses. Hypercall
    /// services, if the source has them, are served on their doorbells.
    @discardableResult
    public func load(_ source: BootSource) throws(MachineError) -> LoadedGuest {
        let (slots, extra) = try state.withLock { state throws(MachineError) in
            guard state.phase == .composing else {
                throw MachineError(.loadGuest, reason: "a guest is already loaded (the machine is \(state.phase))")
            }
            return (state.virtio, state.extraCommandLine)
        }
        let loaded: LoadedGuest
        let boot: LoadedBoot
        switch source.kind {
        case let .linux(kernelImage, initrdImage, commandLine, bootProtocol, extractOnHost):
            let bytes = try kernelImage.read(what: "kernel")
            let initrd = try initrdImage?.read(what: "initrd")
            var kernel = try during(.readImage) { try LinuxKernel(bytes: bytes) }
            var kind = "an ELF kernel"
            if case let .bzImage(image) = kernel {
                if extractOnHost {
                    kernel = try during(.readImage) { try LinuxKernel(extracting: image) }
                    kind = "a bzImage extracted on the host (\(image.compression?.rawValue ?? "unknown compression"))"
                } else {
                    kind = "a bzImage (its own decompressor)"
                }
            }
            let vcpus = configuration.vcpuCount
            let acpi = try during(.loadGuest) { try ACPITables(vcpuCount: vcpus, virtioDevices: slots.map(\.acpiRecord)) }
            try during(.loadGuest) {
                try acpi.write(to: memory)
                try MPTable(vcpuCount: vcpus).write(to: memory)
            }
            let line = ([commandLine] + extra + slots.map(\.commandLineAnnouncement)).filter { !$0.isEmpty }.joined(separator: " ")
            let plan = try during(.loadGuest) {
                try LinuxLoader.load(kernel, commandLine: line, initrd: initrd, into: memory, acpiRoot: acpi.address,
                                     bootProtocol: bootProtocol)
            }
            boot = .linux(plan)
            loaded = LoadedGuest(kind: kind, entry: plan.entry, linuxPlan: plan, commandLine: line)
        case let .unikernel(image, argument):
            let bytes = try image.read(what: "unikernel")
            let elf = try during(.readImage) { try ELF64Image(bytes: bytes) }
            try during(.loadGuest) { try elf.load(into: memory) }
            boot = .unikernel(entry: elf.entry, argument: argument)
            loaded = LoadedGuest(kind: "a unikernel", entry: elf.entry, linuxPlan: nil, commandLine: nil)
        }
        let dispatcher = source.hypercalls.map { HypercallDispatcher(memory: memory, table: $0) }
        try state.withLock { state throws(MachineError) in
            guard state.phase == .composing else {
                throw MachineError(.loadGuest, reason: "the machine changed while the guest was loaded (it is \(state.phase))")
            }
            state.phase = .loaded
            state.boot = boot
            state.traps = dispatcher?.trapSites ?? [:]
            state.dispatcher = dispatcher
        }
        return loaded
    }
}

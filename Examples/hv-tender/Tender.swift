import HVBoot
import HVCore
import HVKVM
import HVParavirt

/// A unikernel VM as hv-tender builds it: guest RAM, an ELF guest loaded at its physical
/// addresses, one vCPU in 64-bit long mode, and the hypercall dispatcher on the doorbell.
struct TenderVM {
    let memory: GuestMemoryMmap
    let dispatcher: HypercallDispatcher
    let runner: VCPURunner

    /// Loads `image` and prepares the vCPU; `services` choose what the guest may call.
    /// `argument` reaches the guest in RDI (its `hv_main` parameter).
    init(image: ELF64Image, memorySize: UInt64, services: [any ParavirtService], argument: UInt64 = 0) throws {
        let kvm = try KVM()
        let vm = try kvm.createVM()
        memory = try GuestMemoryMmap(size: memorySize)
        try vm.map(memory)
        try image.load(into: memory)

        var table = HypercallTable()
        for service in services { try table.install(service) }
        dispatcher = HypercallDispatcher(memory: memory, table: table)
        runner = VCPURunner(vm: vm, pio: Bus(space: .pio), mmio: Bus(space: .mmio), traps: dispatcher.trapSites)

        let cpuid = try kvm.supportedCPUID()
        let (memory, entry) = (self.memory, image.entry)
        try runner.start(vcpuCount: 1) { vcpu throws(KVMError) in
            try vcpu.setCPUID(cpuid)
            try vcpu.setupLongMode(memory: memory, entry: entry, argument: argument)
        }
    }
}

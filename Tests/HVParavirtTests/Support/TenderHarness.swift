import Glibc
import HVDevicesTesting
import HVBoot
import HVCore
import HVKVM
import HVParavirt
import Testing

let kvmUnavailableReason: String? = KVM.unavailabilityReason()

extension Trait where Self == ConditionTrait {
    /// Runs the test only where /dev/kvm works, and says why it was skipped otherwise.
    static var requiresKVM: ConditionTrait {
        .enabled(if: kvmUnavailableReason == nil, Comment(rawValue: "needs /dev/kvm: \(kvmUnavailableReason ?? "")"))
    }
}

/// What a guest run ended with.
struct TenderRun {
    let reason: StopReason
    let console: String
    let dispatcher: HypercallDispatcher
}

/// A guest loaded and running: its runner, dispatcher and console.
struct RunningTender {
    let runner: VCPURunner
    let dispatcher: HypercallDispatcher
    let console: CollectingSink

    /// Waits for the guest to end (at most `timeout` seconds, then stops it so that a broken
    /// guest fails the test instead of hanging it).
    func finish(timeout: Double = 20) throws -> TenderRun {
        let runner = self.runner
        let watchdog = try HostThread(name: "watchdog") {
            for _ in 0..<Int(timeout * 100) where runner.stopReason == nil { usleep(10_000) }
            runner.stop()
        }
        let reason = runner.join()
        watchdog.join()
        return TenderRun(reason: reason, console: console.text, dispatcher: dispatcher)
    }
}

/// An ELF guest loaded into a VM, with its dispatcher and console, not yet running.
struct PreparedTender {
    let vm: VirtualMachine
    let dispatcher: HypercallDispatcher
    let console: CollectingSink
    /// Puts a vCPU in long mode at the guest's entry.
    let setup: VCPURunner.Setup
}

/// Loads an ELF guest into `memorySize` bytes of RAM, with the console and lifecycle services
/// plus `services` and `doorbells`; the setup starts it in long mode with `argument` in RDI.
func prepareTenderGuest(
    _ elf: [UInt8], memorySize: UInt64 = 8 << 20, services: [any ParavirtService] = [], argument: UInt64 = 0,
    doorbells: [TrapSite] = [.port(HypercallABI.doorbellPort)]
) throws -> PreparedTender {
    let kvm = try KVM()
    let vm = try kvm.createVM()
    let memory = try GuestMemoryMmap(size: memorySize)
    try vm.map(memory)
    let image = try ELF64Image(bytes: elf)
    try image.load(into: memory)

    let console = CollectingSink()
    var table = HypercallTable()
    try table.install(ConsoleService(output: console))
    try table.install(LifecycleService())
    for service in services { try table.install(service) }
    let dispatcher = HypercallDispatcher(memory: memory, table: table, doorbells: doorbells)
    let cpuid = try kvm.supportedCPUID()
    return PreparedTender(vm: vm, dispatcher: dispatcher, console: console) { vcpu throws(KVMError) in
        try vcpu.setCPUID(cpuid)
        try vcpu.setupLongMode(memory: memory, entry: image.entry, argument: argument)
    }
}

/// Loads a guest (see ``prepareTenderGuest``) and starts it on a vCPU thread of its own.
func startTenderGuest(
    _ elf: [UInt8], memorySize: UInt64 = 8 << 20, services: [any ParavirtService] = [], argument: UInt64 = 0,
    doorbells: [TrapSite] = [.port(HypercallABI.doorbellPort)]
) throws -> RunningTender {
    let prepared = try prepareTenderGuest(elf, memorySize: memorySize, services: services, argument: argument, doorbells: doorbells)
    let runner = VCPURunner(vm: prepared.vm, pio: Bus(space: .pio), mmio: Bus(space: .mmio), traps: prepared.dispatcher.trapSites)
    try runner.start(vcpuCount: 1, setup: prepared.setup)
    return RunningTender(runner: runner, dispatcher: prepared.dispatcher, console: prepared.console)
}

/// Runs a guest to its end (see ``startTenderGuest``).
func runTenderGuest(
    _ elf: [UInt8], memorySize: UInt64 = 8 << 20, services: [any ParavirtService] = [], argument: UInt64 = 0,
    doorbells: [TrapSite] = [.port(HypercallABI.doorbellPort)], timeout: Double = 20
) throws -> TenderRun {
    try startTenderGuest(elf, memorySize: memorySize, services: services, argument: argument, doorbells: doorbells)
        .finish(timeout: timeout)
}

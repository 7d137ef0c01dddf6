// hv-fleet: many small unikernel VMs on a few host threads, with HVKit's M:N vCPU scheduler.
// Each VM runs the built-in Embedded Swift guest (hv-tender's, without a disk); VCPUScheduler
// gives their vCPUs turns on the worker threads, and the program prints what each got.
//
//   hv-fleet                          50 VMs on 2 workers
//   hv-fleet --vms 200 --workers 1    more VMs, one worker
//   hv-fleet --compare                the same VMs again with a thread per VM, for the timing
import ArgumentParser
import GuestImages
import HVBoot
import HVCore
import HVKVM
import HVParavirt
import Synchronization

@main
struct Fleet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hv-fleet",
        abstract: "Run many small unikernel VMs on a few worker threads (HVKit's M:N vCPU scheduler).")

    @Option(help: "How many VMs.")
    var vms = 50

    @Option(help: "Worker threads that run the vCPUs.")
    var workers = 2

    @Option(help: "Time slice in milliseconds.")
    var slice = 4

    @Option(help: "Guest RAM per VM in MiB.")
    var memory: UInt64 = 8

    @Flag(help: "Then run the same VMs with a thread per VM (VCPURunner) and compare the times.")
    var compare = false

    mutating func run() async throws {
        let image = try ELF64Image(bytes: GuestImages.hello)
        let kvm = try KVM()
        let fleet = try (0..<vms).map { _ in try FleetVM(kvm: kvm, image: image, memorySize: memory << 20) }

        let scheduler = try VCPUScheduler(workers: workers, timeSlice: .milliseconds(slice))
        let clock = ContinuousClock()
        let start = clock.now
        let scheduled = try fleet.map { machine in
            try scheduler.add(machine.vm, pio: Bus(space: .pio), mmio: Bus(space: .mmio),
                              traps: machine.dispatcher.trapSites, setup: machine.setup)
        }
        var outcomes: [String: Int] = [:]
        for vm in scheduled { outcomes["\(await vm.wait())", default: 0] += 1 }
        let elapsed = clock.now - start
        scheduler.shutdown()

        print("VM 0 said:")
        print(fleet[0].console.text, terminator: "")
        print("\n\(vms) VMs on \(workers) worker threads (+1 slice timer), \(slice) ms slices: \(elapsed)")
        for (outcome, count) in outcomes.sorted(by: { $0.key < $1.key }) { print("  \(count) × \(outcome)") }
        let statistics = scheduled.compactMap { $0.statistics()[0] }
        let slices = statistics.map(\.slices)
        print("  slices per VM: \(slices.min() ?? 0) to \(slices.max() ?? 0); moved between workers: \(statistics.map(\.migrations).reduce(0, +)) times; "
            + "slices the timer had to end: \(scheduler.sliceKicks)")
        let guest = statistics.map(\.nanosecondsInGuest).reduce(0, +), vmm = statistics.map(\.nanosecondsInVMM).reduce(0, +)
        print("  in KVM_RUN \(guest / 1_000_000) ms, in the VMM \(vmm / 1_000_000) ms, hypercalls \(statistics.map(\.trapExits).reduce(0, +))")

        if compare {
            let again = try (0..<vms).map { _ in try FleetVM(kvm: kvm, image: image, memorySize: memory << 20) }
            let start = clock.now
            let runners = try again.map { machine in
                let runner = VCPURunner(vm: machine.vm, pio: Bus(space: .pio), mmio: Bus(space: .mmio), traps: machine.dispatcher.trapSites)
                try runner.start(vcpuCount: 1, setup: machine.setup)
                return runner
            }
            for runner in runners { _ = await runner.wait() }
            print("the same with a thread per VM (\(vms) threads): \(clock.now - start)")
            for runner in runners { runner.join() }
        }
        if outcomes.keys.contains(where: { !$0.contains("exit with status 0") }) { throw ExitCode(1) }
    }
}

/// One unikernel VM: RAM with the guest loaded, and a dispatcher with the services it uses.
struct FleetVM {
    let vm: VirtualMachine
    let dispatcher: HypercallDispatcher
    let console = ConsoleBuffer()
    let setup: VCPURunner.Setup

    init(kvm: KVM, image: ELF64Image, memorySize: UInt64) throws {
        vm = try kvm.createVM()
        let memory = try GuestMemoryMmap(size: memorySize)
        try vm.map(memory)
        try image.load(into: memory)
        var table = HypercallTable()
        for service: any ParavirtService in [ConsoleService(output: console), ClockService(), RandomService(), LifecycleService()] {
            try table.install(service)
        }
        dispatcher = HypercallDispatcher(memory: memory, table: table)
        let cpuid = try kvm.supportedCPUID()
        let entry = image.entry
        setup = { vcpu throws(KVMError) in
            try vcpu.setCPUID(cpuid)
            try vcpu.setupLongMode(memory: memory, entry: entry)
        }
    }
}

/// Keeps what a guest writes to its console.
final class ConsoleBuffer: ByteSink {
    private let bytes = Mutex<[UInt8]>([])
    func write(_ buffer: UnsafeRawBufferPointer) { bytes.withLock { $0.append(contentsOf: buffer) } }
    var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
}

// hv-fleet: many small unikernel VMs on a few host threads, with HVKit's M:N vCPU scheduler.
// Each VM is an HVMachine running the built-in Embedded Swift guest (hv-tender's, without a
// disk); VCPUScheduler gives their vCPUs turns on the worker threads, and the program prints
// what each got.
//
//   hv-fleet                          50 VMs on 2 workers
//   hv-fleet --vms 200 --workers 1    more VMs, one worker
//   hv-fleet --compare                the same VMs again with a thread per VM, for the timing
//   hv-fleet --clones 20              one VM saved while it runs, then 20 clones restored from it
import ArgumentParser
import Glibc
import GuestImages
import HVMachine

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

    @Option(help: "Instead: boot one VM that counts timer interrupts, save it while it runs, and restore this many clones of it.")
    var clones: Int?

    mutating func run() async throws {
        if let clones {
            try runClones(clones)
            return
        }
        // The VMs have no devices: one event loop serves them all.
        let events = try EventLoop(name: "fleet-io")
        defer { events.shutdown() }
        let fleet = try (0..<vms).map { _ in try FleetVM(memorySize: memory << 20, events: events) }

        let scheduler = try VCPUScheduler(workers: workers, timeSlice: .milliseconds(slice))
        let clock = ContinuousClock()
        let start = clock.now
        for vm in fleet { try vm.machine.start(on: scheduler) }
        var outcomes: [String: Int] = [:]
        for vm in fleet { outcomes["\(await vm.machine.wait().stopReason)", default: 0] += 1 }
        let elapsed = clock.now - start
        scheduler.shutdown()

        print("VM 0 said:")
        print(fleet[0].console.text, terminator: "")
        print("\n\(vms) VMs on \(workers) worker threads (+1 slice timer), \(slice) ms slices: \(elapsed)")
        for (outcome, count) in outcomes.sorted(by: { $0.key < $1.key }) { print("  \(count) × \(outcome)") }
        let statistics = fleet.compactMap { $0.machine.statistics()[0] }
        let slices = statistics.map(\.slices)
        print("  slices per VM: \(slices.min() ?? 0) to \(slices.max() ?? 0); moved between workers: \(statistics.map(\.migrations).reduce(0, +)) times; "
            + "slices the timer had to end: \(scheduler.sliceKicks)")
        let guest = statistics.map(\.nanosecondsInGuest).reduce(0, +), vmm = statistics.map(\.nanosecondsInVMM).reduce(0, +)
        print("  in KVM_RUN \(guest / 1_000_000) ms, in the VMM \(vmm / 1_000_000) ms, hypercalls \(statistics.map(\.trapExits).reduce(0, +))")

        if compare {
            let again = try (0..<vms).map { _ in try FleetVM(memorySize: memory << 20, events: events) }
            let start = clock.now
            for vm in again { try vm.machine.start() }
            for vm in again { _ = await vm.machine.wait() }
            print("the same with a thread per VM (\(vms) threads): \(clock.now - start)")
        }
        if outcomes.keys.contains(where: { !$0.contains("exit with status 0") }) { throw ExitCode(1) }
    }
}

extension Fleet {
    /// Where the ticking guest keeps its record: magic, nonce, timer interrupts counted.
    static let record = GuestAddress(4 << 20)

    /// Boots one VM of Guests/tender/timer_ticks.c, saves it once it has counted some timer
    /// interrupts, and restores `count` clones of it, each mapping the snapshot's memory
    /// copy-on-write; prints what the clones cost and that each goes on counting.
    func runClones(_ count: Int) throws {
        let directory = "/tmp/hv-fleet-snapshot-\(getpid())"
        defer {
            for file in [MachineSnapshot.stateFileName, MachineSnapshot.memoryFileName] { unlink(directory + "/" + file) }
            rmdir(directory)
        }
        let clock = ContinuousClock()
        let original = try Machine(MachineConfiguration(memorySize: memory << 20))
        try original.load(.unikernel(image: GuestImages.timerTicks, hypercalls: try Self.tickerServices(), argument: Self.record.rawValue))
        try original.start()
        while try Self.ticks(original) < 5 { usleep(10_000) }
        let saved = try original.snapshot(to: directory, leavePaused: true)
        let savedTicks = try Self.ticks(original)
        original.stop()
        _ = original.wait()
        print("saved a VM after \(savedTicks) timer interrupts: \(saved)")

        let start = clock.now
        let snapshot = try MachineSnapshot(directory: directory)
        var fleet: [Machine] = []
        for index in 0..<count {
            var configuration = MachineConfiguration()
            configuration.name = "clone\(index)"
            let clone = try Machine(restoring: snapshot, configuration)
            try clone.restore(hypercalls: try Self.tickerServices())
            try clone.start()
            fleet.append(clone)
        }
        let restored = clock.now - start
        usleep(500_000)
        let ticks = try fleet.map { try Self.ticks($0) }
        let nonces = try Set(fleet.map { try $0.memory.read(UInt64.self, at: GuestAddress(Self.record.rawValue + 8)) })
        for clone in fleet {
            clone.stop()
            _ = clone.wait()
        }
        print("\(count) clones restored and started in \(restored); after half a second they had counted \(ticks.min() ?? 0) to \(ticks.max() ?? 0) interrupts"
            + " (saved at \(savedTicks)), all with the snapshot's nonce: \(nonces.count == 1)")
        if nonces.count != 1 || ticks.contains(where: { $0 <= savedTicks }) { throw ExitCode(1) }
    }

    static func tickerServices() throws -> HypercallTable {
        var table = HypercallTable()
        for service: any ParavirtService in [ConsoleService(output: ConsoleBuffer()), RandomService()] { try table.install(service) }
        return table
    }

    static func ticks(_ machine: Machine) throws -> UInt64 {
        try machine.memory.read(UInt64.self, at: GuestAddress(record.rawValue + 16))
    }
}

/// One unikernel VM: the built-in guest loaded, with the services it uses.
struct FleetVM {
    let machine: Machine
    let console = ConsoleBuffer()

    init(memorySize: UInt64, events: EventLoop) throws {
        var configuration = MachineConfiguration(memorySize: memorySize)
        configuration.interruptControllers = false
        configuration.sharedEventLoop = events
        machine = try Machine(configuration)
        try machine.load(.unikernel(image: GuestImages.hello, hypercalls: try .essentials(console: console)))
    }
}

/// Keeps what a guest writes to its console.
final class ConsoleBuffer: ByteSink {
    private let bytes = Locked<[UInt8]>([])
    func write(_ buffer: UnsafeRawBufferPointer) { bytes.withLock { $0.append(contentsOf: buffer) } }
    var text: String { String(decoding: bytes.withLock { $0 }, as: UTF8.self) }
}

import CBenchBaseline
import Glibc
import HVCore
import HVKVM
import Synchronization
import SystemPackage

// The vCPU scheduling figures: pause latency, M:N against a thread per VM, VM churn against
// C, and what it costs to run a vCPU on another thread than last time.

/// A prepared VM with the real-mode guest `code` at 0x10000 and buses of its own.
struct SmallVM {
    let vm: VirtualMachine
    let memory: GuestMemoryMmap
    let pio = Bus(space: .pio)
    let mmio = Bus(space: .mmio)

    init(kvm: KVM, code: [UInt8], memorySize: UInt64 = 1 << 20) throws {
        vm = try kvm.createVM()
        memory = try GuestMemoryMmap(size: memorySize)
        try vm.map(memory)
        try memory.write(code, to: guestEntry)
    }

    static let realModeSetup: VCPURunner.Setup = { vcpu throws(KVMError) in
        try vcpu.setupRealMode(codeSegment: 0x1000, offset: 0)
    }
}

/// From pause() to every vCPU parked, for two vCPUs spinning in the guest (so each pause has
/// to kick both out of KVM_RUN), median of `rounds`.
func pauseLatencyFigure(rounds: Int) throws -> Figure {
    let machine = try SmallVM(kvm: try KVM(), code: BenchGuests.spin)
    let runner = VCPURunner(vm: machine.vm, pio: machine.pio, mmio: machine.mmio)
    try runner.start(vcpuCount: 2, setup: SmallVM.realModeSetup)
    defer {
        runner.stop()
        runner.join()
    }
    var latencies: [Double] = []
    for _ in 0..<rounds {
        usleep(2000)
        let start = nowNanoseconds()
        guard runner.pause() else { throw BenchError.unexpected("the VM stopped: \(runner.stopReason.map(String.init(describing:)) ?? "?")") }
        latencies.append(nowNanoseconds() - start)
        runner.resume()
    }
    let sorted = latencies.sorted()
    return Figure(name: "pause_latency", value: median(latencies) / 1000, baseline: nil, unit: "us",
                  note: "2 spinning vCPUs, median of \(rounds), fastest \(format(sorted[0] / 1000)) us, slowest \(format(sorted[sorted.count - 1] / 1000)) us")
}

/// 100 VMs each running the same fixed guest work (fixed_work.S) to its hlt: the total time
/// on a VCPUScheduler with 2 workers (value) against one VCPURunner thread per VM (baseline),
/// both measured from the first vCPU created to the last VM done. The VMs' memory is
/// prepared before the clock starts, in both cases.
func mnVersusDedicatedFigure(rounds: Int, vmCount: Int = 100) throws -> Figure {
    let kvm = try KVM()
    var scheduled: [Double] = []
    var dedicated: [Double] = []
    var sliceRange = (min: UInt64.max, max: UInt64(0))
    for _ in 0..<rounds {
        // M:N.
        var machines = try (0..<vmCount).map { _ in try SmallVM(kvm: kvm, code: BenchGuests.fixedWork) }
        let scheduler = try VCPUScheduler(workers: 2)
        var start = nowNanoseconds()
        let vms = try machines.map { machine in
            try scheduler.add(machine.vm, pio: machine.pio, mmio: machine.mmio, setup: SmallVM.realModeSetup)
        }
        for vm in vms {
            let reason = vm.join()
            guard reason == .halted(vcpu: 0) else { throw BenchError.unexpected("a scheduled VM stopped with \(reason)") }
        }
        scheduled.append(nowNanoseconds() - start)
        for vm in vms {
            let slices = vm.statistics()[0]?.slices ?? 0
            sliceRange = (min(sliceRange.min, slices), max(sliceRange.max, slices))
        }
        scheduler.shutdown()

        // A thread per VM.
        machines = try (0..<vmCount).map { _ in try SmallVM(kvm: kvm, code: BenchGuests.fixedWork) }
        start = nowNanoseconds()
        let runners = try machines.map { machine in
            let runner = VCPURunner(vm: machine.vm, pio: machine.pio, mmio: machine.mmio)
            try runner.start(vcpuCount: 1, setup: SmallVM.realModeSetup)
            return runner
        }
        for runner in runners {
            let reason = runner.join()
            guard reason == .halted(vcpu: 0) else { throw BenchError.unexpected("a dedicated VM stopped with \(reason)") }
        }
        dedicated.append(nowNanoseconds() - start)
    }
    return Figure(name: "mn_vs_dedicated", value: median(scheduled) / 1e6, baseline: median(dedicated) / 1e6, unit: "ms",
                  note: "\(vmCount) VMs, 2 workers + 1 timer thread vs \(vmCount) vCPU threads, median of \(rounds); slices per VM \(sliceRange.min)-\(sliceRange.max)")
}

/// VMs created, run to their first exit and destroyed per second, through HVKVM (value)
/// against the same loop in C (baseline): vm_create's work plus the teardown. Higher is
/// better, so the goal is a ratio of at least 0.8.
func vmsPerSecondFigure(rounds: Int, vmsPerRound: Int = 50) throws -> Figure {
    var swift: [Double] = []
    var c: [Double] = []
    let guest = BenchGuests.pioLoop
    for _ in 0..<rounds {
        let start = nowNanoseconds()
        for _ in 0..<vmsPerRound {
            let machine = try runToFirstExit()
            withExtendedLifetime(machine) {}
        }
        swift.append(Double(vmsPerRound) / ((nowNanoseconds() - start) / 1e9))
        let baseline = guest.withUnsafeBufferPointer { hvb_c_vm_loop($0.baseAddress, $0.count, Int32(vmsPerRound)) }
        guard baseline > 0 else { throw BenchError.baseline("VM loop", baseline) }
        c.append(Double(vmsPerRound) / (baseline / 1e9))
    }
    return Figure(name: "vms_per_second", value: median(swift), baseline: median(c), unit: "VMs/s",
                  note: "create, run to the first exit, destroy; \(vmsPerRound) per round, median of \(rounds); higher is better")
}

/// The time inside KVM_RUN for one port-I/O exit when every run happens on another thread
/// than the one before (value) against runs that always come back to the same thread
/// (baseline). Both hand the vCPU over between threads the same way; only the thread that
/// runs it changes. This is what moving a vCPU between scheduler workers costs in KVM.
func vcpuMigrationFigure(rounds: Int, runs: Int = 2000) throws -> Figure {
    let machine = try SmallVM(kvm: try KVM(), code: BenchGuests.pioLoop)
    let vcpu = try machine.vm.createVCPU(id: 0)
    try vcpu.setupRealMode(codeSegment: 0x1000, offset: 0)
    let runners = try [HandOffThread(vcpu: vcpu), HandOffThread(vcpu: vcpu)]
    defer { for runner in runners { runner.finish() } }
    var moving: [Double] = []
    var staying: [Double] = []
    for _ in 0..<rounds {
        moving.append(try timedRuns(runs) { index in runners[index % 2] })
        staying.append(try timedRuns(runs) { _ in runners[0] })
    }
    return Figure(name: "vcpu_migration", value: median(moving), baseline: median(staying), unit: "ns",
                  note: "KVM_RUN per exit, thread changed every run vs same thread, \(runs) runs, median of \(rounds); host kernel \(kernelRelease())")
}

/// Runs the vCPU `count` times, run N on `thread(N)`; returns the mean nanoseconds inside KVM_RUN.
private func timedRuns(_ count: Int, on thread: (Int) -> HandOffThread) throws -> Double {
    var total = 0.0
    for index in 0..<count { total += try thread(index).runOnce() }
    return total / Double(count)
}

/// A thread that runs a vCPU once each time it is asked, and reports the time in KVM_RUN.
private final class HandOffThread: @unchecked Sendable {
    // SAFETY: `vcpu` is used by one thread at a time: the caller waits for each run to end
    // (`done`) before it asks this or another HandOffThread for the next. Hence @unchecked.
    private let vcpu: VCPU
    private let go: EventFD
    private let done: EventFD
    private let result = Locked<Result<Double, KVMError>>(.success(0))
    private let quit = Atomic<Bool>(false)
    private var thread: HostThread?

    init(vcpu: VCPU) throws {
        self.vcpu = vcpu
        go = try EventFD(semaphore: true)
        done = try EventFD(semaphore: true)
        thread = try HostThread(name: "bench-handoff") { [self] in loop() }
    }

    private func loop() {
        while (try? go.consume()) != nil, !quit.load(ordering: .acquiring) {
            let start = nowNanoseconds()
            let outcome: Result<Double, KVMError>
            do {
                _ = try vcpu.run()
                outcome = .success(nowNanoseconds() - start)
            } catch {
                outcome = .failure(error)
            }
            result.withLock { $0 = outcome }
            try? done.signal()
        }
    }

    func runOnce() throws -> Double {
        try go.signal()
        _ = try done.consume()
        return try result.withLock { $0 }.get()
    }

    func finish() {
        quit.store(true, ordering: .releasing)
        try? go.signal()
        thread?.join()
    }
}

private func kernelRelease() -> String {
    var name = utsname()
    uname(&name)
    return withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
}

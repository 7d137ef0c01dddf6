import GuestImages
import CBenchBaseline
import Glibc
import HVBoot
import HVCore
import HVKVM
import HVParavirt
import SystemPackage

/// Wraps the dispatcher as the runner's trap, counts calls, timestamps the first and the
/// `target`-th, and then stops the runner: the Swift side of null_hypercall.
final class CountingTrap: RegisterTrap {
    let dispatcher: HypercallDispatcher
    let target: Int
    private let state = Locked((count: 0, first: 0.0, last: 0.0))
    private let runner = Locked<VCPURunner?>(nil)

    init(dispatcher: HypercallDispatcher, target: Int) {
        self.dispatcher = dispatcher
        self.target = target
    }

    func attach(_ runner: VCPURunner) { self.runner.withLock { $0 = runner } }

    func trap(at site: TrapSite, value: UInt64, vcpu: UInt32, registers: inout some GuestRegisterAccess) -> TrapOutcome {
        let outcome = dispatcher.trap(at: site, value: value, vcpu: vcpu, registers: &registers)
        let done = state.withLock { state -> Bool in
            state.count += 1
            if state.count == 1 { state.first = nowNanoseconds() }
            if state.count == target { state.last = nowNanoseconds() }
            return state.count == target
        }
        if done { runner.withLock { $0 }?.stop() }
        return outcome
    }

    func vmStopping() { dispatcher.vmStopping() }

    var nanosecondsPerCall: Double { state.withLock { ($0.last - $0.first) / Double(target - 1) } }
}

/// Swift: the null-hypercall loop through VCPURunner (sync registers) and the dispatcher.
func swiftNullHypercallLoop(calls: Int) throws -> Double {
    let kvm = try KVM()
    let vm = try kvm.createVM()
    let memory = try GuestMemoryMmap(size: 0xA0000)
    try vm.map(memory)
    try memory.write(BenchGuests.nullHypercallLoop, to: guestEntry)
    let dispatcher = HypercallDispatcher(memory: memory, table: HypercallTable())
    let trap = CountingTrap(dispatcher: dispatcher, target: calls)
    let runner = VCPURunner(vm: vm, pio: Bus(space: .pio), mmio: Bus(space: .mmio), traps: [.port(HypercallABI.doorbellPort): trap])
    trap.attach(runner)
    try runner.start(vcpuCount: 1) { vcpu throws(KVMError) in
        try vcpu.setupRealMode(codeSegment: 0x1000, offset: 0)
    }
    let reason = runner.join()
    guard reason == .stopRequested else { throw BenchError.unexpected("null hypercall loop stopped: \(reason)") }
    guard dispatcher.statistics(for: .null)?.errors == 0 else { throw BenchError.unexpected("null hypercalls failed") }
    return trap.nanosecondsPerCall
}

func nullHypercallFigure(rounds: Int, calls: Int) throws -> Figure {
    var swift: [Double] = []
    var c: [Double] = []
    let guest = BenchGuests.nullHypercallLoop
    for _ in 0..<rounds {
        swift.append(try swiftNullHypercallLoop(calls: calls))
        let baseline = guest.withUnsafeBufferPointer { hvb_c_exit_loop($0.baseAddress, $0.count, Int32(calls)) }
        guard baseline > 0 else { throw BenchError.baseline("exit loop", baseline) }
        c.append(baseline)
    }
    return Figure(name: "null_hypercall", value: median(swift) / 1000, baseline: median(c) / 1000, unit: "us",
                  note: "median of \(rounds) rounds of \(calls) calls; baseline: the same guest bytes as raw port-I/O exits in C")
}

/// What one run of Guests/bench/block_reads.c cost, per 4 KiB request.
struct BlockReadsCost {
    /// Wall-clock time of the whole run, guest instructions included (slow here: PVM).
    var wall: Double
    /// Host time: the dispatcher's handler time plus each exit at the raw exit round trip.
    var host: Double
}

/// One run of Guests/bench/block_reads.c: reads `total` bytes of a disk in 4 KiB requests,
/// one hypercall each or 32 per channel doorbell. `exitCost` is the raw port-I/O exit round
/// trip in ns, measured in C in the same round.
func blockReadsRun(total: UInt64, viaRing: Bool, disk: BlockService, exitCost: Double) throws -> BlockReadsCost {
    let kvm = try KVM()
    let vm = try kvm.createVM()
    let memory = try GuestMemoryMmap(size: 4 << 20)
    try vm.map(memory)
    let image = try ELF64Image(bytes: GuestImages.blockReads)
    try image.load(into: memory)
    var table = HypercallTable()
    try table.install(LifecycleService())
    try table.install(disk)
    let dispatcher = HypercallDispatcher(memory: memory, table: table)
    let runner = VCPURunner(vm: vm, pio: Bus(space: .pio), mmio: Bus(space: .mmio), traps: dispatcher.trapSites)
    let cpuid = try kvm.supportedCPUID()
    let argument = total | (viaRing ? 1 << 63 : 0)
    let start = nowNanoseconds()
    try runner.start(vcpuCount: 1) { vcpu throws(KVMError) in
        try vcpu.setCPUID(cpuid)
        try vcpu.setupLongMode(memory: memory, entry: image.entry, argument: argument)
    }
    let reason = runner.join()
    let elapsed = nowNanoseconds() - start
    guard reason == .guestRequested(.exit(status: 0), vcpu: 0) else {
        throw BenchError.unexpected("block_reads guest (\(viaRing ? "ring" : "hypercalls")) stopped: \(reason)")
    }
    let requests = Double(total / 4096)
    // The calls the guest trapped with (a ring's block reads run inside channel_notify).
    let trapped: [HypercallNumber] = viaRing ? [.channelSetup, .channelNotify] : [.blockRead]
    let statistics = trapped.compactMap { dispatcher.statistics(for: $0) }
    let handlerTime = Double(statistics.reduce(0) { $0 + $1.totalNanoseconds })
    let exits = Double(statistics.reduce(0) { $0 + $1.calls })
    return BlockReadsCost(wall: elapsed / requests / 1000, host: (handlerTime + exits * exitCost) / requests / 1000)
}

/// block_via_hypercall (µs of host time per request; no baseline) and block_via_ring (µs of
/// host time per request; baseline: block_via_hypercall), medians over alternating rounds.
func blockViaParavirtFigures(rounds: Int) throws -> [Figure] {
    let total: UInt64 = 1 << 20
    let disk = try TemporaryFileDisk(size: Int(total))
    let service = try BlockService(fileDescriptor: disk.descriptor, readOnly: true)
    var direct: [BlockReadsCost] = []
    var ring: [BlockReadsCost] = []
    var exitCosts: [Double] = []
    let loop = BenchGuests.pioLoop
    for _ in 0..<rounds {
        let exitCost = loop.withUnsafeBufferPointer { hvb_c_exit_loop($0.baseAddress, $0.count, 5000) }
        guard exitCost > 0 else { throw BenchError.baseline("exit loop", exitCost) }
        exitCosts.append(exitCost)
        direct.append(try blockReadsRun(total: total, viaRing: false, disk: service, exitCost: exitCost))
        ring.append(try blockReadsRun(total: total, viaRing: true, disk: service, exitCost: exitCost))
    }
    let note = { (runs: [BlockReadsCost], how: String) in
        "host time per 4 KiB read of 1 MiB, \(how): handler time + exits x the raw exit round trip "
            + "(\(format(median(exitCosts) / 1000)) us, C, same run); median of \(rounds); wall clock with the guest's "
            + "own (emulated) instructions \(format(median(runs.map(\.wall)))) us/request"
    }
    let directHost = median(direct.map(\.host))
    return [
        Figure(name: "block_via_hypercall", value: directHost, baseline: nil, unit: "us/request",
               note: note(direct, "one hypercall each")),
        Figure(name: "block_via_ring", value: median(ring.map(\.host)), baseline: directHost, unit: "us/request",
               note: note(ring, "32 per channel doorbell")),
    ]
}

/// A scratch file of `size` bytes in /tmp, unlinked at once.
final class TemporaryFileDisk {
    let descriptor: FileDescriptor

    init(size: Int) throws {
        var template = Array("/tmp/hv-bench-paravirt-XXXXXX".utf8CString)
        let fd = mkstemp(&template)
        guard fd >= 0 else { throw BenchError.unexpected("mkstemp failed: errno \(errno)") }
        unlink(template)
        descriptor = FileDescriptor(rawValue: fd)
        let bytes = [UInt8](repeating: 0x5A, count: size)
        _ = try bytes.withUnsafeBytes { try descriptor.writeAll(toAbsoluteOffset: 0, $0) }
    }

    deinit { try? descriptor.close() }
}

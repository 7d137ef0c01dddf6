import CBenchBaseline
import Glibc
import HVCore
import HVKVM

/// One figure hv-bench prints.
struct Figure {
    var name: String
    var value: Double
    var baseline: Double?
    var unit: String
    var note: String = ""

    var ratio: Double? { baseline.map { value / $0 } }
}

enum BenchError: Error, CustomStringConvertible {
    case baseline(String, Double)
    case unexpected(String)

    var description: String {
        switch self {
        case let .baseline(what, code): return "C baseline \(what) failed: errno \(Int(-code))"
        case let .unexpected(what): return what
        }
    }
}

func nowNanoseconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return Double(time.tv_sec) * 1e9 + Double(time.tv_nsec)
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? .nan : sorted[sorted.count / 2]
}

/// A device that counts writes, timestamps the first and the `target`-th, and then stops the
/// runner: the Swift side of the exit benchmarks, measured through the real VCPURunner and bus.
final class CountingDevice: BusDevice {
    private struct State {
        var count = 0
        var first = 0.0
        var last = 0.0
        var lastValue: UInt64 = 0
    }

    let target: Int
    private let state = Locked(State())
    private let runner = Locked<VCPURunner?>(nil)

    init(target: Int) { self.target = target }

    func attach(_ runner: VCPURunner) { self.runner.withLock { $0 = runner } }

    func read(offset: UInt64, width: AccessWidth) -> UInt64 { 0 }

    func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        let done = state.withLock { state -> Bool in
            state.count += 1
            state.lastValue = value
            if state.count == 1 { state.first = nowNanoseconds() }
            if state.count == target { state.last = nowNanoseconds() }
            return state.count == target
        }
        if done { runner.withLock { $0 }?.stop() }
    }

    /// Nanoseconds per exit between the first and the last counted one.
    var nanosecondsPerExit: Double {
        state.withLock { ($0.last - $0.first) / Double(target - 1) }
    }
}

enum ExitKind {
    case pio
    case mmio

    var guest: [UInt8] { self == .pio ? BenchGuests.pioLoop : BenchGuests.mmioLoop }
}

let guestEntry = GuestAddress(0x10000)

/// Swift: the guest loop through KVM, VCPURunner and a Bus; ns per exit.
func swiftExitLoop(_ kind: ExitKind, exits: Int) throws -> Double {
    let kvm = try KVM()
    let vm = try kvm.createVM()
    // 640 KiB of low memory, as the C side maps, so that 0xD0000 is a hole (MMIO).
    let memory = try GuestMemoryMmap(size: 0xA0000)
    try vm.map(memory)
    try memory.write(kind.guest, to: guestEntry)
    let pio = Bus(space: .pio)
    let mmio = Bus(space: .mmio)
    let device = CountingDevice(target: exits)
    if kind == .pio {
        try pio.register(device, at: GuestAddress(0x10), length: 1)
    } else {
        try mmio.register(device, at: GuestAddress(0xD0000), length: 0x1000)
    }
    let runner = VCPURunner(vm: vm, pio: pio, mmio: mmio)
    device.attach(runner)
    try runner.start(vcpuCount: 1) { vcpu throws(KVMError) in
        try vcpu.setupRealMode(codeSegment: 0x1000, offset: 0)
    }
    let reason = runner.join()
    guard reason == .stopRequested else { throw BenchError.unexpected("exit loop stopped: \(reason)") }
    return device.nanosecondsPerExit
}

func exitFigure(_ kind: ExitKind, rounds: Int, exits: Int) throws -> Figure {
    var swift: [Double] = []
    var c: [Double] = []
    let guest = kind.guest
    for _ in 0..<rounds {
        // Alternate the two sides so that noise from the shared machine hits both alike.
        swift.append(try swiftExitLoop(kind, exits: exits))
        let baseline = guest.withUnsafeBufferPointer { hvb_c_exit_loop($0.baseAddress, $0.count, Int32(exits)) }
        guard baseline > 0 else { throw BenchError.baseline("exit loop", baseline) }
        c.append(baseline)
    }
    return Figure(name: kind == .pio ? "pio_exit" : "mmio_exit", value: median(swift) / 1000,
                  baseline: median(c) / 1000, unit: "us", note: "median of \(rounds) rounds of \(exits) exits")
}

/// Swift: open /dev/kvm, create a VM, map 2 MiB, one vCPU, run to the first port-I/O exit.
func swiftVMCreate() throws -> Double {
    let start = nowNanoseconds()
    let machine = try runToFirstExit()
    let elapsed = nowNanoseconds() - start
    withExtendedLifetime(machine) {}
    return elapsed
}

/// A VM with 2 MiB of RAM and one vCPU that has run the port-I/O loop guest up to its first
/// `out`: what vm_create times and what rss_outside_guest measures.
struct FirstExitMachine {
    let vm: VirtualMachine
    let memory: GuestMemoryMmap
    let vcpu: VCPU
}

func runToFirstExit() throws -> FirstExitMachine {
    let kvm = try KVM()
    let vm = try kvm.createVM()
    let memory = try GuestMemoryMmap(size: 2 << 20)
    try vm.map(memory)
    try memory.write(BenchGuests.pioLoop, to: guestEntry)
    let vcpu = try vm.createVCPU(id: 0)
    try vcpu.setupRealMode(codeSegment: 0x1000, offset: 0)
    while true {
        switch try vcpu.run() {
        case .ioOut: return FirstExitMachine(vm: vm, memory: memory, vcpu: vcpu)
        case .interrupted: continue
        case let other: throw BenchError.unexpected("first exit was \(other)")
        }
    }
}

func vmCreateFigure(rounds: Int) throws -> Figure {
    var swift: [Double] = []
    var c: [Double] = []
    let guest = BenchGuests.pioLoop
    for _ in 0..<rounds {
        swift.append(try swiftVMCreate())
        let baseline = guest.withUnsafeBufferPointer { hvb_c_vm_create($0.baseAddress, $0.count) }
        guard baseline > 0 else { throw BenchError.baseline("VM creation", baseline) }
        c.append(baseline)
    }
    return Figure(name: "vm_create", value: median(swift) / 1000, baseline: median(c) / 1000, unit: "us",
                  note: "median of \(rounds)")
}

/// Resident memory of this process outside guest RAM after an hv-hello-style setup and run,
/// in MiB: VmRSS minus the guest pages that are resident (counted with mincore).
func rssOutsideGuestFigure() throws -> Figure {
    let machine = try runToFirstExit()
    let memory = machine.memory

    let guestResident: Int
    do { guestResident = Int(try memory.residentBytes()) } catch { throw BenchError.unexpected("mincore failed: \(error)") }
    let status = try processStatus()
    let rss = status["VmRSS"] ?? 0
    withExtendedLifetime(machine) {}
    return Figure(name: "rss_outside_guest", value: Double(rss - guestResident) / Double(1 << 20), baseline: nil,
                  unit: "MiB",
                  note: "VmRSS \(rss >> 10) KiB = anonymous \((status["RssAnon"] ?? 0) >> 10) KiB + file \((status["RssFile"] ?? 0) >> 10) KiB"
                      + " (mostly the executable's code) + shared \((status["RssShmem"] ?? 0) >> 10) KiB; guest resident \(guestResident >> 10) KiB")
}

/// The memory lines of /proc/self/status (VmRSS, RssAnon, RssFile, RssShmem, ...), in bytes.
func processStatus() throws -> [String: Int] {
    let fd = open("/proc/self/status", O_RDONLY)
    guard fd >= 0 else { throw BenchError.unexpected("cannot open /proc/self/status") }
    defer { close(fd) }
    var bytes = [UInt8](repeating: 0, count: 8192)
    let count = read(fd, &bytes, bytes.count)
    guard count > 0 else { throw BenchError.unexpected("cannot read /proc/self/status") }
    let text = String(decoding: bytes[..<count], as: UTF8.self)
    var fields: [String: Int] = [:]
    for line in text.split(separator: "\n") where line.hasSuffix(" kB") {
        let parts = line.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, let kib = Int(parts[1].filter(\.isNumber)) else { continue }
        fields[String(parts[0])] = kib * 1024
    }
    guard fields["VmRSS"] != nil else { throw BenchError.unexpected("no VmRSS line in /proc/self/status") }
    return fields
}

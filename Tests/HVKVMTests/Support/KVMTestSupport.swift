import HVCore
import HVKVM
import Synchronization
import Testing

/// Why KVM tests are skipped here, or nil when /dev/kvm works. Printed by Swift Testing as
/// the skip reason.
let kvmUnavailableReason: String? = KVM.unavailabilityReason()
let kvmAvailable = kvmUnavailableReason == nil

extension Trait where Self == ConditionTrait {
    /// Runs the test only where /dev/kvm works, and says why it was skipped otherwise.
    static var requiresKVM: ConditionTrait {
        .enabled(if: kvmAvailable, Comment(rawValue: "needs /dev/kvm: \(kvmUnavailableReason ?? "")"))
    }
}

/// A port or MMIO device for tests: reads of width N return `readValues[N]`, every access is
/// recorded in order.
final class EchoDevice: BusDevice {
    struct Access: Equatable, CustomStringConvertible {
        var isWrite: Bool
        var offset: UInt64
        var width: Int
        var value: UInt64
        var description: String { "\(isWrite ? "W" : "R")\(width)@\(offset)=0x\(String(value, radix: 16))" }
    }

    let readValues: [Int: UInt64]
    let accesses = Locked<[Access]>([])

    init(readValues: [Int: UInt64] = [1: 0x11, 2: 0x2222, 4: 0x3333_3333, 8: 0x4444_4444_4444_4444]) {
        self.readValues = readValues
    }

    func read(offset: UInt64, width: AccessWidth) -> UInt64 {
        let value = readValues[width.byteCount] ?? 0
        accesses.withLock { $0.append(Access(isWrite: false, offset: offset, width: width.byteCount, value: value)) }
        return value
    }

    func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        accesses.withLock { $0.append(Access(isWrite: true, offset: offset, width: width.byteCount, value: value)) }
    }

    var writes: [Access] { accesses.withLock { $0.filter(\.isWrite) } }
}

/// A VM with `memorySize` bytes of RAM at 0 and a test guest loaded at `entry`.
struct TestVM {
    static let entry = GuestAddress(0x10000)
    static let stackTop: UInt64 = 0x8000

    let kvm: KVM
    let vm: VirtualMachine
    let memory: GuestMemoryMmap
    let pio = Bus(space: .pio)
    let mmio = Bus(space: .mmio)

    init(code: [UInt8], memory: GuestMemoryMmap? = nil, logDirtyPages: Bool = false, at entry: GuestAddress = TestVM.entry) throws {
        kvm = try KVM()
        vm = try kvm.createVM()
        self.memory = try memory ?? GuestMemoryMmap(size: 1 << 20)
        try vm.map(self.memory, logDirtyPages: logDirtyPages)
        try self.memory.write(code, to: entry)
    }

    /// An echo device on ports 0x10-0x13 and another at `mmioBase`, the pair the I/O
    /// round-trip guests talk to.
    func attachEchoDevices(mmioBase: GuestAddress, mmioLength: UInt64 = 0x10) throws -> (port: EchoDevice, mmio: EchoDevice) {
        let port = EchoDevice()
        let mmio = EchoDevice()
        try pio.register(port, at: GuestAddress(0x10), length: 4)
        try self.mmio.register(mmio, at: mmioBase, length: mmioLength)
        return (port, mmio)
    }

    /// Runs one vCPU set up by `setup` until it stops, or until `timeout` passes, after which
    /// it is stopped; `timedOut` says whether that happened.
    func run(
        timeout: Duration = .seconds(10), exitHandler: VCPURunner.ExitHandler? = nil,
        setup: @escaping VCPURunner.Setup
    ) async throws -> (reason: StopReason, timedOut: Bool) {
        let runner = VCPURunner(vm: vm, pio: pio, mmio: mmio, exitHandler: exitHandler)
        try runner.start(vcpuCount: 1, setup: setup)
        return await Self.wait(for: runner, timeout: timeout)
    }

    /// Waits for `runner`, stopping it if it outlives `timeout`, then joins its threads.
    static func wait(for runner: VCPURunner, timeout: Duration) async -> (reason: StopReason, timedOut: Bool) {
        let timedOut = Atomic<Bool>(false)
        let watchdog = Task {
            try await Task.sleep(for: timeout)
            timedOut.store(true, ordering: .relaxed)
            runner.stop()
        }
        let reason = await runner.wait()
        watchdog.cancel()
        runner.join()
        return (reason, timedOut.load(ordering: .relaxed))
    }

    /// vCPU 0, created on the calling thread, in long mode at `entry` with KVM's CPUID: for
    /// tests that drive `run()` themselves.
    func makeLongModeVCPU(entry: GuestAddress = TestVM.entry) throws -> VCPU {
        let vcpu = try vm.createVCPU(id: 0)
        try longMode(entry: entry)(vcpu)
        return vcpu
    }

    /// Setup for a 64-bit guest at `entry` with KVM's supported CPUID.
    func longMode(entry: GuestAddress = TestVM.entry) throws -> VCPURunner.Setup {
        let cpuid = try kvm.supportedCPUID()
        let memory = self.memory
        return { vcpu throws(KVMError) in
            try vcpu.setCPUID(cpuid)
            try vcpu.setupLongMode(memory: memory, entry: entry, stackPointer: TestVM.stackTop)
        }
    }
}

// hv-hello: the smallest VMM you can compose from HVKit. It maps 2 MiB of guest RAM, loads a
// 64-bit guest that writes a greeting to port 0xE9 and halts, runs it on one vCPU, and prints
// what the guest wrote.
import Glibc
import HVCore
import HVKVM

/// Collects the bytes the guest writes to its debug port (the Bochs/QEMU 0xE9 convention).
final class DebugPort: BusDevice {
    let output = Locked<[UInt8]>([])
    func read(offset: UInt64, width: AccessWidth) -> UInt64 { 0 }
    func write(offset: UInt64, width: AccessWidth, value: UInt64) {
        output.withLock { $0.append(UInt8(truncatingIfNeeded: value)) }
    }
}

func runHello() throws -> Int32 {
    let kvm = try KVM()
    let vm = try kvm.createVM()

    // 1. Guest RAM, registered with KVM, and the guest's code at 0x10000.
    let memory = try GuestMemoryMmap(size: 2 << 20)
    try vm.map(memory)
    let entry = GuestAddress(0x10000)
    try memory.write(HelloGuest.hello, to: entry)

    // 2. Devices: the debug port on the port-I/O bus.
    let pio = Bus(space: .pio)
    let console = DebugPort()
    try pio.register(console, at: GuestAddress(0xE9), length: 1)

    // 3. One vCPU in 64-bit long mode at the entry point; run until the guest halts.
    let cpuid = try kvm.supportedCPUID()
    let runner = VCPURunner(vm: vm, pio: pio, mmio: Bus(space: .mmio))
    try runner.start(vcpuCount: 1) { vcpu throws(KVMError) in
        try vcpu.setCPUID(cpuid)
        try vcpu.setupLongMode(memory: memory, entry: entry, stackPointer: 0x20_0000)
    }
    let reason = runner.join()

    let text = String(decoding: console.output.withLock { $0 }, as: UTF8.self)
    print("guest wrote: \(text)", terminator: text.hasSuffix("\n") ? "" : "\n")
    print("guest stopped: \(reason)")
    guard case .halted = reason, text.contains("Hello") else { return 1 }
    return 0
}

do {
    exit(try runHello())
} catch {
    print("hv-hello: \(error)")
    exit(1)
}

import FuzzSupport
import HVBoot
import HVCore

// ACPI and MP table generation and the e820 map from random machine descriptions: vCPU
// counts, virtio-mmio windows and interrupts, and table addresses anywhere (inside RAM, at
// its edges, in the hole or outside it).

private let memory = fuzzMemory()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBootTables(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    let vcpus = Int(input.next(UInt16.self)) - 8
    let devices = (0..<input.next(below: 40)).map { _ in
        ACPITables.VirtioMMIORecord(base: hostileAddress(&input), length: input.next(UInt32.self), interrupt: input.next(UInt32.self))
    }
    let address = GuestAddress(hostileAddress(&input))
    if let tables = try? ACPITables(vcpuCount: vcpus, virtioDevices: devices, at: address) {
        try? tables.write(to: memory)
    }
    if let table = try? MPTable(vcpuCount: vcpus, at: address) {
        try? table.write(to: memory, at: address)
    }
    _ = try? E820Map.entries(for: memory)
    return 0
}

/// The process entry SwiftPM links as `main`: libFuzzer with this target.
@_cdecl("fuzz_boot_tables_main")
public func fuzzerMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzzBootTables)
}

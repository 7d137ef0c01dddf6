import FuzzSupport
import HVBoot
import HVCore

// ELF parsing, note lookup (the PVH entry every ELF or extracted bzImage boot reads) and
// loading into guest memory, from arbitrary bytes.

private let memory = fuzzMemory()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzELF(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    guard let image = try? ELF64Image(bytes: input.rest()) else { return 0 }
    _ = try? image.notes()
    _ = try? PVH.entryPoint(of: image)
    try? image.load(into: memory)
    return 0
}

/// The process entry SwiftPM links as `main`: libFuzzer with this target.
@_cdecl("fuzz_elf_main")
public func fuzzerMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzzELF)
}

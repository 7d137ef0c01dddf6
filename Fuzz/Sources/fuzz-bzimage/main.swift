import FuzzSupport
import HVBoot
import HVCore

// bzImage header parsing, payload extraction (decompression bounded by the size the image
// states) and boot planning, from arbitrary bytes.

private let memory = fuzzMemory()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBzImage(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    let extract = input.nextBool()
    let bytes = input.rest()
    _ = try? LinuxSetupHeader(image: bytes)
    guard let image = try? BzImage(bytes: bytes) else { return 0 }
    _ = try? LinuxLoader.plan(.bzImage(image), commandLine: "console=ttyS0", initrdSize: 4096, memory: memory)
    if extract, let vmlinux = try? image.extractKernel() {
        _ = try? ELF64Image(bytes: vmlinux)
    }
    return 0
}

/// The process entry SwiftPM links as `main`: libFuzzer with this target.
@_cdecl("fuzz_bzimage_main")
public func fuzzerMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzzBzImage)
}

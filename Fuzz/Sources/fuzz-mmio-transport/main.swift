import FuzzSupport
import HVCore
import HVDevices
import HVDevicesTesting

// The virtio-mmio transport driven by a sequence of register accesses of every width and
// offset, interleaved with whole initialisations, hostile chains, notifications and resets,
// in front of an entropy device (one queue) and a console (two queues).

private let memory = fuzzMemory()
private let entropy = VirtioMMIOTransport(device: EntropyDevice(queueSize: 16), memory: memory, interruptLine: CountingInterruptLine())
private let console = VirtioMMIOTransport(device: ConsoleDevice(output: DiscardingSink(), queueSize: 16), memory: memory,
                                          interruptLine: CountingInterruptLine())

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzMMIOTransport(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    if input.nextBool() {
        driveTransport(entropy, memory: memory, queueSizes: [16], input: &input)
    } else {
        driveTransport(console, memory: memory, queueSizes: [16, 16], input: &input)
    }
    return 0
}

/// The process entry SwiftPM links as `main`: libFuzzer with this target.
@_cdecl("fuzz_mmio_transport_main")
public func fuzzerMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzzMMIOTransport)
}

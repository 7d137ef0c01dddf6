import FuzzSupport
import HVCore
import HVDevices
import HVDevicesTesting

// virtio-console (receive and transmit, with host input arriving between guest requests)
// and virtio-rng, with hostile chains on their queues.

private let memory = fuzzMemory()
private let console = ConsoleDevice(output: DiscardingSink(), queueSize: 16)
private let consoleTransport = VirtioMMIOTransport(device: console, memory: memory, interruptLine: CountingInterruptLine())
private let entropyTransport = VirtioMMIOTransport(device: EntropyDevice(queueSize: 16), memory: memory, interruptLine: CountingInterruptLine())

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConsoleAndEntropy(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    let consoleDriver = MMIODriver(transport: consoleTransport)
    let entropyDriver = MMIODriver(transport: entropyTransport)
    guard var receive = try? DriverQueue(memory: memory, size: 16, base: GuestAddress(0x1000)),
          var transmit = try? DriverQueue(memory: memory, size: 16, base: GuestAddress(0x3000)),
          var entropy = try? DriverQueue(memory: memory, size: 16, base: GuestAddress(0x5000)) else { return 0 }
    consoleDriver.initialize(queues: [receive, transmit])
    entropyDriver.initialize(queues: [entropy])
    for _ in 0..<24 where !input.isAtEnd {
        switch input.next(UInt8.self) % 5 {
        case 0:
            _ = try? receive.addChain(hostileChain(&input))
            consoleDriver.notify(0)
        case 1:
            _ = try? transmit.addChain(hostileChain(&input))
            consoleDriver.notify(1)
        case 2:
            console.receive(input.bytes(input.next(below: 300)))
        case 3:
            _ = try? entropy.addChain(hostileChain(&input))
            entropyDriver.notify(0)
        default:
            _ = try? receive.takeUsed()
            _ = try? transmit.takeUsed()
            _ = try? entropy.takeUsed()
        }
    }
    consoleDriver.setStatus([])
    entropyDriver.setStatus([])
    return 0
}

/// The process entry SwiftPM links as `main`: libFuzzer with this target.
@_cdecl("fuzz_console_rng_main")
public func fuzzerMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzzConsoleAndEntropy)
}

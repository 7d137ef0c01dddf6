import FuzzSupport
import HVCore
import HVDevices
import HVDevicesTesting

// virtio-blk end to end with the sync backend on a scratch file: requests of every type
// (and unknown ones) with hostile sectors, counts, discard segments, buffer layouts and
// status places, through the MMIO transport; plus resets between them.

private let memory = fuzzMemory()
private let device = BlockDevice(backend: SyncBlockBackend(disk: fuzzDisk()), queueSize: 32)
private let transport = VirtioMMIOTransport(device: device, memory: memory, interruptLine: CountingInterruptLine())
private let types: [UInt32] = [0, 1, 4, 8, 11, 13, 2, 0xFFFF_FFFF]

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzBlockRequest(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    let driver = MMIODriver(transport: transport)
    guard var queue = try? DriverQueue(memory: memory, size: 32) else { return 0 }
    driver.initialize(queues: [queue])
    for _ in 0..<8 where !input.isAtEnd {
        let header = GuestAddress(0x8000)
        let type = input.nextBool() ? types[input.next(below: types.count)] : input.next(UInt32.self)
        try? memory.write(type, at: header)
        try? memory.write(input.next(UInt32.self), at: GuestAddress(0x8004))
        try? memory.write(input.next(UInt64.self) % 128, at: GuestAddress(0x8008))
        // A discard / write-zeroes segment, in case the request is one.
        try? memory.write(input.next(UInt64.self) % 128, at: GuestAddress(0xB000))
        try? memory.write(input.next(UInt32.self) % 0x20000, at: GuestAddress(0xB008))
        try? memory.write(input.next(UInt32.self) & 3, at: GuestAddress(0xB00C))
        var chain: [(address: GuestAddress, length: UInt32, writable: Bool)] = []
        if input.nextBool() { chain.append((header, 16, false)) }
        if input.nextBool() { chain.append((GuestAddress(0xB000), 16, false)) }
        chain += hostileChain(&input, maxBuffers: 3)
        if input.nextBool() { chain.append((GuestAddress(0x9000), 1, true)) }
        _ = try? queue.addChain(chain)
        driver.notify(0)
        _ = try? queue.takeUsed()
        if driver.status.contains(.needsReset) || input.next(UInt8.self) == 0 {
            driver.setStatus([])
            guard let fresh = try? DriverQueue(memory: memory, size: 32) else { return 0 }
            queue = fresh
            driver.initialize(queues: [queue])
        }
    }
    driver.setStatus([])
    return 0
}

/// The process entry SwiftPM links as `main`: libFuzzer with this target.
@_cdecl("fuzz_block_request_main")
public func fuzzerMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzzBlockRequest)
}

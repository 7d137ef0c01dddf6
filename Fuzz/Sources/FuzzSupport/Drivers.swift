import Glibc
import HVCore
import HVDevices
import HVDevicesTesting

/// A scratch disk file of `sectors` sectors for the block targets, unlinked at once (the open
/// descriptor keeps it).
public func fuzzDisk(sectors: Int = 64) -> DiskImage {
    var template = Array("/tmp/hvkit-fuzz-disk-XXXXXX".utf8CString)
    let fd = mkstemp(&template)
    guard fd >= 0, ftruncate(fd, off_t(sectors * 512)) == 0 else { fatalError("cannot create the fuzzing disk") }
    let path = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    defer {
        close(fd)
        unlink(path)
    }
    guard let disk = try? DiskImage(path: path) else { fatalError("cannot open the fuzzing disk") }
    return disk
}

/// A chain of up to `maxBuffers` hostile buffers read from the input.
public func hostileChain(_ input: inout FuzzInput, maxBuffers: Int = 5) -> [(address: GuestAddress, length: UInt32, writable: Bool)] {
    (0..<(1 + input.next(below: maxBuffers))).map { _ in
        (GuestAddress(hostileAddress(&input)), input.next(UInt32.self) % 0x2000, input.nextBool())
    }
}

/// Drives a transport from the input: register reads and writes of any width and offset,
/// whole driver initialisations, hostile chains on any queue, notifications and resets.
/// `queueSizes` are the device's queues; each gets a driver queue at its own place in RAM.
public func driveTransport(_ transport: VirtioMMIOTransport, memory: GuestMemoryMmap, queueSizes: [UInt16],
                           input: inout FuzzInput, operations: Int = 48) {
    let driver = MMIODriver(transport: transport)
    var queues = queueSizes.enumerated().compactMap { index, size in
        try? DriverQueue(memory: memory, size: min(size, 64), base: GuestAddress(0x1000 + UInt64(index) * 0x4000))
    }
    for _ in 0..<operations where !input.isAtEnd {
        switch input.next(UInt8.self) % 8 {
        case 0:
            let width = AccessWidth.allCases[input.next(below: 4)]
            _ = transport.read(offset: UInt64(input.next(UInt16.self) % 0x200), width: width)
        case 1:
            let width = AccessWidth.allCases[input.next(below: 4)]
            transport.write(offset: UInt64(input.next(UInt16.self) % 0x200), width: width, value: input.next(UInt64.self))
        case 2:
            driver.initialize(queues: queues)
        case 3:
            guard !queues.isEmpty else { break }
            let index = input.next(below: queues.count)
            _ = try? queues[index].addChain(hostileChain(&input))
        case 4:
            driver.notify(UInt32(input.next(below: queueSizes.count + 2)))
        case 5:
            driver.setStatus(DeviceStatus(rawValue: input.next(UInt8.self)))
        case 6:
            driver.setStatus([])
            queues = queueSizes.enumerated().compactMap { index, size in
                try? DriverQueue(memory: memory, size: min(size, 64), base: GuestAddress(0x1000 + UInt64(index) * 0x4000))
            }
        default:
            for index in queues.indices { _ = try? queues[index].takeUsed() }
            _ = driver.acknowledgeInterrupts()
        }
    }
    // Leave the device reset for the next input.
    driver.setStatus([])
}

/// Output nobody reads.
public final class DiscardingSink: ByteSink {
    /// An output that drops everything.
    public init() {}
    /// Drops `bytes`.
    public func write(_ bytes: UnsafeRawBufferPointer) {}
}

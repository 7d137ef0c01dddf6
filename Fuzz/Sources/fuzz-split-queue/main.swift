import FuzzSupport
import HVCore
import HVDevices
import HVDevicesTesting
import Synchronization

// The split virtqueue's chain walking under a hostile driver: the input lays out descriptors
// (direct and in an indirect table), avail ring entries and indices in guest memory; the
// device pops chains, reads and writes them, and completes them, while a second thread keeps
// rewriting descriptors from the rest of the input. Nothing may crash, hang or touch memory
// outside the guest's RAM (AddressSanitizer watches the host side).

private let memory = fuzzMemory()
private let indirectTable = GuestAddress(0xA000)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSplitQueue(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    var input = FuzzInput(data, size)
    let queueSize = UInt16(1) << UInt16(input.next(below: 6))
    guard var driver = try? DriverQueue(memory: memory, size: max(queueSize, 2)) else { return 0 }
    guard var queue = try? driver.makeDeviceQueue(eventIndex: input.nextBool(), indirect: input.nextBool()) else { return 0 }
    let descriptorCount = input.next(below: 24)
    for _ in 0..<descriptorCount {
        let index = UInt16(input.next(below: Int(driver.size) + 2))
        let descriptor = Descriptor(address: hostileAddress(&input), length: input.next(UInt32.self) % 0x3000,
                                    flags: Descriptor.Flags(rawValue: input.next(UInt16.self) & 0x7),
                                    next: UInt16(input.next(below: 40)))
        let inTable = input.nextBool()
        try? driver.writeDescriptor(index, descriptor, table: inTable ? indirectTable : nil)
    }
    for _ in 0..<input.next(below: 8) { try? driver.publish(UInt16(input.next(below: 40))) }
    if input.nextBool() { try? driver.setAvailableIndex(input.next(UInt16.self)) }

    // A second thread rewrites the descriptor table and avail ring while the device walks.
    let scribbles = input.bytes(64)
    let stop = Atomic<Bool>(false)
    let table = driver.descriptorTable
    let scribbler = scribbles.isEmpty ? nil : try? HostThread(name: "scribbler") {
        var position = 0
        while !stop.load(ordering: .relaxed) {
            let offset = UInt64(scribbles[position % scribbles.count]) * 2
            let value = UInt16(scribbles[(position + 1) % scribbles.count]) << 8 | UInt16(scribbles[(position + 2) % scribbles.count])
            try? memory.write(value, at: GuestAddress(table.rawValue + offset))
            position += 3
        }
    }
    for _ in 0..<64 {
        do {
            guard let chain = try queue.popChain(in: memory) else { break }
            var reader = chain.reader(in: memory)
            _ = try? reader.readBytes(Int(min(reader.remaining, 256)))
            var writer = chain.writer(in: memory)
            _ = try? writer.write([UInt8](repeating: 0xAB, count: Int(min(writer.remaining, 256))))
            try queue.addUsed(head: chain.head, length: UInt32(writer.bytesWritten), in: memory)
            _ = try queue.needsNotification(in: memory)
        } catch let VirtqueueError.invalidChain(refused) {
            if let status = refused.statusByte { try? memory.write(UInt8(1), at: status) }
            try? queue.addUsed(head: refused.head, length: 1, in: memory)
        } catch {
            break
        }
    }
    stop.store(true, ordering: .relaxed)
    scribbler?.join()
    return 0
}

/// The process entry SwiftPM links as `main`: libFuzzer with this target.
@_cdecl("fuzz_split_queue_main")
public func fuzzerMain(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv, fuzzSplitQueue)
}

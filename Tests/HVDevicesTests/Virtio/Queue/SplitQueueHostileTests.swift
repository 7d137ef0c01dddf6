import HVCore
@testable import HVDevices
import HVDevicesTesting
import HVTestSupport
import Testing

private let data = GuestAddress(0x8000)
private let table = GuestAddress(0xA000)

/// Pops the next chain and expects it to be refused with `error`, offering `statusByte` (nil:
/// none) to report that in, and to stay in flight until the device completes it; the queue
/// stays usable.
private func expectRefused(
    _ error: ChainError, statusByte: GuestAddress? = nil, driver: inout DriverQueue, queue: inout SplitQueue, head: UInt16,
    sourceLocation: SourceLocation = #_sourceLocation
) throws {
    let memory = driver.memory
    let refused = MalformedChain(head: head, error: error, statusByte: statusByte)
    #expect(throws: VirtqueueError.invalidChain(refused), sourceLocation: sourceLocation) {
        try queue.popChain(in: memory)
    }
    // Nothing is returned to the driver behind the device's back.
    #expect(try driver.takeUsed().isEmpty, sourceLocation: sourceLocation)
    #expect(queue.fault == nil && queue.inFlightCount == 1, sourceLocation: sourceLocation)
    // The device reports the error and completes it; the queue goes on.
    try queue.addUsed(head: head, length: 1, in: memory)
    let used = try driver.takeUsed()
    #expect(used.count == 1 && used.first?.id == UInt32(head) && used.first?.length == 1, sourceLocation: sourceLocation)
    try driver.addChain([(data, 8, true)])
    #expect(try queue.popChain(in: memory)?.writableLength == 8, sourceLocation: sourceLocation)
}

/// Expects the queue to break with `fault`, and every later call to fail at once the same way.
private func expectBroken(_ fault: QueueFault, queue: inout SplitQueue, memory: GuestMemoryMmap,
                          sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(throws: VirtqueueError.broken(fault), sourceLocation: sourceLocation) { try queue.popChain(in: memory) }
    #expect(queue.fault == fault, sourceLocation: sourceLocation)
    #expect(throws: VirtqueueError.broken(fault), sourceLocation: sourceLocation) { try queue.popChain(in: memory) }
    #expect(throws: VirtqueueError.broken(fault), sourceLocation: sourceLocation) { try queue.addUsed(head: 0, length: 0, in: memory) }
}

@Suite("SplitQueue: hostile drivers")
struct SplitQueueHostileTests {
    let memory: GuestMemoryMmap
    var driver: DriverQueue
    var queue: SplitQueue

    init() throws {
        memory = try testMemory()
        driver = try DriverQueue(memory: memory, size: 8)
        queue = try driver.makeDeviceQueue()
    }

    // MARK: Chains refused one at a time

    @Test mutating func directLoop() throws {
        try driver.writeDescriptor(0, Descriptor(address: data.rawValue, length: 4, flags: [.next], next: 1))
        try driver.writeDescriptor(1, Descriptor(address: data.rawValue, length: 4, flags: [.next], next: 0))
        try driver.publish(0)
        try expectRefused(.descriptorLoop(index: 0, indirect: false), driver: &driver, queue: &queue, head: 0)
    }

    @Test mutating func selfLoop() throws {
        try driver.writeDescriptor(3, Descriptor(address: data.rawValue, length: 4, flags: [.next], next: 3))
        try driver.publish(3)
        try expectRefused(.descriptorLoop(index: 3, indirect: false), driver: &driver, queue: &queue, head: 3)
    }

    @Test mutating func loopInsideIndirectTable() throws {
        try driver.writeDescriptor(0, Descriptor(address: data.rawValue, length: 4, flags: [.next], next: 1), table: table)
        try driver.writeDescriptor(1, Descriptor(address: data.rawValue, length: 4, flags: [.next], next: 0), table: table)
        try driver.writeDescriptor(0, Descriptor(address: table.rawValue, length: 32, flags: [.indirect]))
        try driver.publish(0)
        try expectRefused(.descriptorLoop(index: 0, indirect: true), driver: &driver, queue: &queue, head: 0)
    }

    @Test mutating func nextIndexOutOfRange() throws {
        try driver.writeDescriptor(0, Descriptor(address: data.rawValue, length: 4, flags: [.next], next: 8))
        try driver.publish(0)
        try expectRefused(.descriptorIndexOutOfRange(index: 8, tableSize: 8), driver: &driver, queue: &queue, head: 0)
    }

    @Test mutating func indirectNextIndexOutOfRange() throws {
        try driver.writeDescriptor(0, Descriptor(address: data.rawValue, length: 4, flags: [.next], next: 2), table: table)
        try driver.writeDescriptor(0, Descriptor(address: table.rawValue, length: 32, flags: [.indirect]))
        try driver.publish(0)
        try expectRefused(.descriptorIndexOutOfRange(index: 2, tableSize: 2), driver: &driver, queue: &queue, head: 0)
    }

    @Test mutating func addressPlusLengthOverflows() throws {
        let address = GuestAddress(0xFFFF_FFFF_FFFF_FF00)
        try driver.writeDescriptor(0, Descriptor(address: address.rawValue, length: 0x1000))
        try driver.publish(0)
        try expectRefused(.badBuffer(.addressOverflow(address: address, length: 0x1000)), driver: &driver, queue: &queue, head: 0)
    }

    @Test mutating func bufferAcrossTheHole() throws {
        let address = GuestAddress(holeAddress.rawValue - 8)
        try driver.writeDescriptor(0, Descriptor(address: address.rawValue, length: 16, flags: [.write]))
        try driver.publish(0)
        try expectRefused(.badBuffer(.crossesHole(address: address, length: 16)), driver: &driver, queue: &queue, head: 0)
    }

    @Test mutating func bufferBeyondRAM() throws {
        let address = GuestAddress(0x1_0000_0000)
        try driver.writeDescriptor(0, Descriptor(address: address.rawValue, length: 16))
        try driver.publish(0)
        try expectRefused(.badBuffer(.outOfBounds(address: address, length: 16)), driver: &driver, queue: &queue, head: 0)
    }

    @Test mutating func writableBufferInReadOnlyMemory() throws {
        try driver.writeDescriptor(0, Descriptor(address: readOnlyAddress.rawValue, length: 16, flags: [.write]))
        try driver.publish(0)
        try expectRefused(.badBuffer(.readOnly(address: readOnlyAddress, length: 16)), driver: &driver, queue: &queue, head: 0)
    }

    @Test mutating func nestedIndirect() throws {
        try driver.writeDescriptor(0, Descriptor(address: table.rawValue, length: 16, flags: [.indirect]), table: table)
        try driver.writeDescriptor(0, Descriptor(address: table.rawValue, length: 16, flags: [.indirect]))
        try driver.publish(0)
        try expectRefused(.nestedIndirect, driver: &driver, queue: &queue, head: 0)
    }

    @Test(arguments: [0, 8, 17, 16 * 1025] as [UInt32])
    mutating func indirectTableLengthIsChecked(length: UInt32) throws {
        try driver.writeDescriptor(0, Descriptor(address: table.rawValue, length: length, flags: [.indirect]))
        try driver.publish(0)
        try expectRefused(.badIndirectTableLength(length), driver: &driver, queue: &queue, head: 0)
    }

    @Test mutating func indirectTableAcrossTheHole() throws {
        let address = GuestAddress(holeAddress.rawValue - 16)
        try driver.writeDescriptor(0, Descriptor(address: address.rawValue, length: 32, flags: [.indirect]))
        try driver.publish(0)
        try expectRefused(.badBuffer(.crossesHole(address: address, length: 32)), driver: &driver, queue: &queue, head: 0)
    }

    @Test mutating func indirectWithNext() throws {
        try driver.writeDescriptor(0, Descriptor(address: table.rawValue, length: 16, flags: [.indirect, .next], next: 1))
        try driver.publish(0)
        try expectRefused(.indirectWithNext, driver: &driver, queue: &queue, head: 0)
    }

    @Test mutating func indirectWithoutTheFeature() throws {
        queue = try driver.makeDeviceQueue(indirect: false)
        try driver.writeDescriptor(0, Descriptor(address: table.rawValue, length: 16, flags: [.indirect]))
        try driver.publish(0)
        try expectRefused(.indirectNotNegotiated, driver: &driver, queue: &queue, head: 0)
    }

    @Test mutating func readableAfterWritable() throws {
        try driver.writeDescriptor(0, Descriptor(address: data.rawValue, length: 4, flags: [.write, .next], next: 1))
        try driver.writeDescriptor(1, Descriptor(address: data.rawValue, length: 4))
        try driver.publish(0)
        try expectRefused(.readableAfterWritable(index: 1), driver: &driver, queue: &queue, head: 0)
    }

    @Test func chainLargerThanFourGiB() throws {
        // 5 GiB of address space reserved but never touched.
        let big = try GuestMemoryMmap([MemoryRegionSpec(start: GuestAddress(0), size: 5 << 30, options: [.noReserve])])
        var driver = try DriverQueue(memory: big, size: 4)
        var queue = try driver.makeDeviceQueue()
        try driver.writeDescriptor(0, Descriptor(address: 0x10_0000, length: .max, flags: [.next], next: 1))
        try driver.writeDescriptor(1, Descriptor(address: 0x10_0000, length: 2))
        try driver.publish(0)
        try expectRefused(.chainTooLarge, driver: &driver, queue: &queue, head: 0)
    }

    // MARK: Where a refused chain's error can be reported

    /// The walk goes on past a bad buffer, so the chain's last buffer is found: when it is
    /// writable RAM its last byte is offered as the status byte (virtio-blk writes IOERR there).
    @Test mutating func badBufferBeforeAWritableEndOffersItsLastByte() throws {
        let status = GuestAddress(0x9000)
        try driver.writeDescriptor(0, Descriptor(address: 0x1_0000_0000, length: 16, flags: [.next], next: 1))
        try driver.writeDescriptor(1, Descriptor(address: data.rawValue, length: 512, flags: [.write, .next], next: 2))
        try driver.writeDescriptor(2, Descriptor(address: status.rawValue, length: 4, flags: [.write]))
        try driver.publish(0)
        try expectRefused(.badBuffer(.outOfBounds(address: GuestAddress(0x1_0000_0000), length: 16)),
                          statusByte: GuestAddress(status.rawValue + 3), driver: &driver, queue: &queue, head: 0)
    }

    @Test mutating func readableAfterWritableBeforeAWritableEnd() throws {
        try driver.writeDescriptor(0, Descriptor(address: data.rawValue, length: 4, flags: [.write, .next], next: 1))
        try driver.writeDescriptor(1, Descriptor(address: data.rawValue, length: 4, flags: [.next], next: 2))
        try driver.writeDescriptor(2, Descriptor(address: 0x9000, length: 1, flags: [.write]))
        try driver.publish(0)
        try expectRefused(.readableAfterWritable(index: 1), statusByte: GuestAddress(0x9000), driver: &driver, queue: &queue, head: 0)
    }

    @Test mutating func badBufferInsideAnIndirectTableBeforeAWritableEnd() throws {
        try driver.writeDescriptor(0, Descriptor(address: holeAddress.rawValue, length: 8, flags: [.next], next: 1), table: table)
        try driver.writeDescriptor(1, Descriptor(address: 0x9000, length: 1, flags: [.write]), table: table)
        try driver.writeDescriptor(0, Descriptor(address: table.rawValue, length: 32, flags: [.indirect]))
        try driver.publish(0)
        try expectRefused(.badBuffer(.outOfBounds(address: holeAddress, length: 8)), statusByte: GuestAddress(0x9000),
                          driver: &driver, queue: &queue, head: 0)
    }

    /// A writable last buffer that is itself bad, read-only or empty offers nothing.
    @Test(arguments: [(readOnlyAddress, 1), (GuestAddress(0x1_0000_0000), 1), (GuestAddress(0x9000), 0)] as [(GuestAddress, UInt32)])
    mutating func noStatusByteWhenTheLastBufferCannotCarryIt(address: GuestAddress, length: UInt32) throws {
        try driver.writeDescriptor(0, Descriptor(address: holeAddress.rawValue, length: 8, flags: [.next], next: 1))
        try driver.writeDescriptor(1, Descriptor(address: address.rawValue, length: length, flags: [.write]))
        try driver.publish(0)
        try expectRefused(.badBuffer(.outOfBounds(address: holeAddress, length: 8)), driver: &driver, queue: &queue, head: 0)
    }

    /// A bad buffer followed by a loop: the walk cannot find the end, so nothing is offered.
    @Test mutating func badBufferThenALoopOffersNothing() throws {
        try driver.writeDescriptor(0, Descriptor(address: holeAddress.rawValue, length: 8, flags: [.next], next: 1))
        try driver.writeDescriptor(1, Descriptor(address: 0x9000, length: 1, flags: [.write, .next], next: 1))
        try driver.publish(0)
        try expectRefused(.descriptorLoop(index: 1, indirect: false), driver: &driver, queue: &queue, head: 0)
    }

    // MARK: Faults that break the queue

    @Test mutating func availIndexJumpsAhead() throws {
        try driver.setAvailableIndex(9)
        expectBroken(.availableIndexTooFarAhead(available: 9, next: 0, size: 8), queue: &queue, memory: memory)
    }

    @Test mutating func availIndexGoesBackwards() throws {
        // Backwards is "65535 ahead" in 16-bit arithmetic.
        try driver.addChain([(data, 4, true)])
        _ = try queue.popChain(in: memory)
        try driver.setAvailableIndex(0)
        expectBroken(.availableIndexTooFarAhead(available: 0, next: 1, size: 8), queue: &queue, memory: memory)
    }

    @Test mutating func headOutOfRange() throws {
        try driver.publish(200)
        expectBroken(.headOutOfRange(head: 200, size: 8), queue: &queue, memory: memory)
    }

    @Test mutating func duplicateHeadWhileInFlight() throws {
        try driver.writeDescriptor(0, Descriptor(address: data.rawValue, length: 4, flags: [.write]))
        try driver.publish(0)
        try driver.publish(0)
        #expect(try queue.popChain(in: memory)?.head == 0)
        expectBroken(.duplicateHead(0), queue: &queue, memory: memory)
    }

    @Test mutating func completingAHeadNotInFlight() throws {
        #expect(throws: VirtqueueError.broken(.headNotInFlight(3))) { try queue.addUsed(head: 3, length: 0, in: memory) }
    }

    @Test mutating func headMayBeReusedOnceCompleted() throws {
        try driver.writeDescriptor(0, Descriptor(address: data.rawValue, length: 4, flags: [.write]))
        for _ in 0..<3 {
            try driver.publish(0)
            let chain = try #require(try queue.popChain(in: memory))
            try queue.addUsed(head: chain.head, length: 0, in: memory)
        }
        #expect(queue.fault == nil)
    }

    // MARK: Layout checked when the queue is made ready

    @Test(arguments: [0, 3, 6, 16] as [UInt16])
    func sizeMustBeAPowerOfTwoWithinTheMaximum(size: UInt16) throws {
        let memory = try testMemory()
        var queue = SplitQueue(maxSize: 8)
        queue.size = size
        queue.descriptorTable = GuestAddress(0x1000)
        queue.availableRing = GuestAddress(0x2000)
        queue.usedRing = GuestAddress(0x3000)
        #expect(throws: QueueFault.self) { try queue.makeReady(in: memory) }
        #expect(!queue.isReady)
    }

    @Test(arguments: [
        (GuestAddress(0x1008), GuestAddress(0x2000), GuestAddress(0x3000)),  // descriptor table misaligned
        (GuestAddress(0x1000), GuestAddress(0x2001), GuestAddress(0x3000)),  // avail ring misaligned
        (GuestAddress(0x1000), GuestAddress(0x2000), GuestAddress(0x3002)),  // used ring misaligned
        (GuestAddress((1 << 20) - 64), GuestAddress(0x2000), GuestAddress(0x3000)),  // table runs into the hole
        (GuestAddress(0x1000), GuestAddress(0x2000), readOnlyAddress),  // used ring read-only
        (GuestAddress(0x1000), GuestAddress(0xFFFF_FFFF_FFFF_FFF0), GuestAddress(0x3000)),  // avail ring overflows
    ])
    func ringPlacementIsChecked(descriptors: GuestAddress, available: GuestAddress, used: GuestAddress) throws {
        let memory = try testMemory()
        var queue = SplitQueue(maxSize: 8)
        queue.descriptorTable = descriptors
        queue.availableRing = available
        queue.usedRing = used
        #expect(throws: QueueFault.self) { try queue.makeReady(in: memory) }
        #expect(!queue.isReady)
    }

    @Test(arguments: [0, 1, 5, 300, 40000, .max] as [UInt16])
    func maximumSizeIsAPowerOfTwo(requested: UInt16) {
        let size = SplitQueue(maxSize: requested).maxSize
        #expect(size > 0 && size & (size - 1) == 0 && size <= 32768)
    }
}

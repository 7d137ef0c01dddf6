import Glibc
import HVCore
@testable import HVDevices
import HVDevicesTesting
import HVTestSupport
import Testing

private let data = GuestAddress(0x8000)
private let data2 = GuestAddress(0x9000)
private let table = GuestAddress(0xA000)

@Suite("SplitQueue: well-formed chains")
struct SplitQueueTests {
    @Test func emptyQueuePopsNothing() throws {
        let memory = try testMemory()
        let driver = try DriverQueue(memory: memory, size: 8)
        var queue = try driver.makeDeviceQueue()
        #expect(try queue.popChain(in: memory) == nil)
        #expect(try !queue.hasAvailable(in: memory))
    }

    @Test func directChainSplitsReadableAndWritable() throws {
        let memory = try testMemory()
        var driver = try DriverQueue(memory: memory, size: 8)
        var queue = try driver.makeDeviceQueue()
        let head = try driver.addChain([(data, 16, false), (data2, 512, true), (GuestAddress(0x9200), 1, true)])
        let chain = try #require(try queue.popChain(in: memory))
        #expect(chain.head == head)
        #expect(chain.readableLength == 16)
        #expect(chain.writableLength == 513)
        #expect(chain.segments.map(\.isWritable) == [false, true, true])
        try queue.addUsed(head: chain.head, length: 513, in: memory)
        let used = try driver.takeUsed()
        #expect(used.count == 1 && used[0].id == UInt32(head) && used[0].length == 513)
        #expect(queue.inFlightCount == 0)
    }

    @Test func indirectChainIsFollowed() throws {
        let memory = try testMemory()
        var driver = try DriverQueue(memory: memory, size: 8)
        var queue = try driver.makeDeviceQueue()
        try driver.addIndirectChain([(data, 16, false), (data2, 64, true)], table: table)
        let chain = try #require(try queue.popChain(in: memory))
        #expect(chain.readableLength == 16 && chain.writableLength == 64)
        #expect(chain.segments.count == 2)
    }

    @Test func buffersMaySpanTouchingRegionsButCarryTheirOwnChecks() throws {
        // A buffer at the very end of the first region is fine.
        let memory = try testMemory()
        var driver = try DriverQueue(memory: memory, size: 4)
        var queue = try driver.makeDeviceQueue()
        try driver.addChain([(GuestAddress((1 << 20) - 8), 8, false)])
        #expect(try queue.popChain(in: memory)?.readableLength == 8)
    }

    @Test func zeroLengthDescriptorsAreSkipped() throws {
        let memory = try testMemory()
        var driver = try DriverQueue(memory: memory, size: 4)
        var queue = try driver.makeDeviceQueue()
        try driver.addChain([(data, 0, false), (data2, 8, true)])
        let chain = try #require(try queue.popChain(in: memory))
        #expect(chain.segments.count == 1 && chain.writableLength == 8)
    }

    @Test func indicesWrapAroundSixteenBits() throws {
        let memory = try testMemory()
        var driver = try DriverQueue(memory: memory, size: 2)
        var queue = try driver.makeDeviceQueue()
        for round in 0..<(Int(UInt16.max) + 10) {
            try driver.addChain([(data, 4, true)])
            let chain = try #require(try queue.popChain(in: memory), "round \(round)")
            try queue.addUsed(head: chain.head, length: 4, in: memory)
        }
        #expect(queue.nextAvailable == 9 && queue.nextUsed == 9)
        #expect(try driver.usedIndex == 9)
    }

    @Test func noInterruptFlagSuppressesNotification() throws {
        let memory = try testMemory()
        var driver = try DriverQueue(memory: memory, size: 4)
        var queue = try driver.makeDeviceQueue()
        try driver.addChain([(data, 4, true)])
        let chain = try #require(try queue.popChain(in: memory))
        try queue.addUsed(head: chain.head, length: 0, in: memory)
        try driver.setAvailableFlags(1)
        #expect(try !queue.needsNotification(in: memory))
        try driver.setAvailableFlags(0)
        try driver.addChain([(data, 4, true)])
        let second = try #require(try queue.popChain(in: memory))
        try queue.addUsed(head: second.head, length: 0, in: memory)
        #expect(try queue.needsNotification(in: memory))
        // Nothing new used: no second interrupt.
        #expect(try !queue.needsNotification(in: memory))
    }

    @Test func eventIndexNotifiesOnlyWhenUsedEventIsCrossed() throws {
        let memory = try testMemory()
        var driver = try DriverQueue(memory: memory, size: 8)
        var queue = try driver.makeDeviceQueue(eventIndex: true)
        // The driver wants an interrupt once the used index passes 2 (used_event = 2).
        try driver.setUsedEvent(2)
        var notified: [Bool] = []
        for _ in 0..<4 {
            try driver.addChain([(data, 4, true)])
            let chain = try #require(try queue.popChain(in: memory))
            try queue.addUsed(head: chain.head, length: 4, in: memory)
            notified.append(try queue.needsNotification(in: memory))
        }
        #expect(notified == [false, false, true, false])
    }

    @Test func eventIndexPublishesAvailEvent() throws {
        let memory = try testMemory()
        var driver = try DriverQueue(memory: memory, size: 8)
        var queue = try driver.makeDeviceQueue(eventIndex: true)
        try driver.addChain([(data, 4, true)])
        _ = try queue.popChain(in: memory)
        #expect(try !queue.enableNotifications(in: memory))
        #expect(try driver.availEvent == 1)
        try driver.addChain([(data, 4, true)])
        // Work arrived after the device looked: enabling reports it.
        #expect(try queue.enableNotifications(in: memory))
    }

    @Test func withoutEventIndexTheNoNotifyFlagIsUsed() throws {
        let memory = try testMemory()
        let driver = try DriverQueue(memory: memory, size: 8)
        var queue = try driver.makeDeviceQueue()
        try queue.disableNotifications(in: memory)
        #expect(try driver.usedFlags == 1)
        _ = try queue.enableNotifications(in: memory)
        #expect(try driver.usedFlags == 0)
    }

    /// A driver that gives each request slot its own descriptors can reuse a slot whose chain
    /// came back while an older chain is still in flight: completions out of order (as an
    /// io_uring backend's buffered writes give them) never meet a reused head.
    @Test func chainsAtFixedDescriptorsMayCompleteOutOfOrder() throws {
        let memory = try testMemory()
        var driver = try DriverQueue(memory: memory, size: 8)
        var queue = try driver.makeDeviceQueue()
        #expect(try driver.addChain([(data, 16, false), (data2, 1, true)], at: 0) == 0)
        #expect(try driver.addChain([(data, 16, false), (data2, 1, true)], at: 2) == 2)
        let first = try #require(try queue.popChain(in: memory))
        let second = try #require(try queue.popChain(in: memory))
        try queue.addUsed(head: second.head, length: 1, in: memory)
        #expect(try driver.takeUsed().map(\.id) == [2])
        for _ in 0..<5 {
            // Slot 1 again and again while slot 0's chain stays in flight.
            #expect(try driver.addChain([(data, 16, false), (data2, 1, true)], at: 2) == 2)
            let again = try #require(try queue.popChain(in: memory))
            #expect(again.head == 2 && again.segments.count == 2)
            try queue.addUsed(head: again.head, length: 1, in: memory)
            #expect(try driver.takeUsed().map(\.id) == [2])
        }
        try queue.addUsed(head: first.head, length: 1, in: memory)
        #expect(try driver.takeUsed().map(\.id) == [0])
        #expect(queue.inFlightCount == 0 && queue.fault == nil)
    }

    @Test func resetForgetsEverything() throws {
        let memory = try testMemory()
        var driver = try DriverQueue(memory: memory, size: 8)
        var queue = try driver.makeDeviceQueue()
        try driver.addChain([(data, 4, true)])
        _ = try queue.popChain(in: memory)
        queue.reset()
        #expect(!queue.isReady && queue.size == 8 && queue.inFlightCount == 0)
        #expect(throws: VirtqueueError.notReady) { try queue.popChain(in: memory) }
    }
}

@Suite("ChainReader and ChainWriter")
struct ChainCursorTests {
    @Test func readerCrossesSegmentsAndWriterCountsBytes() throws {
        let memory = try testMemory()
        var driver = try DriverQueue(memory: memory, size: 8)
        var queue = try driver.makeDeviceQueue()
        try memory.write([1, 2, 3, 4, 5, 6] as [UInt8], to: data)
        try memory.write([7, 8] as [UInt8], to: data2)
        try driver.addChain([(data, 6, false), (data2, 2, false), (GuestAddress(0xB000), 3, true), (GuestAddress(0xC000), 5, true)])
        let chain = try #require(try queue.popChain(in: memory))
        var reader = chain.reader(in: memory)
        #expect(try reader.read(UInt32.self) == 0x0403_0201)
        #expect(try reader.readBytes(4) == [5, 6, 7, 8])
        #expect(reader.remaining == 0)
        #expect(throws: ChainAccessError.notEnoughSpace(requested: 1, remaining: 0)) { try reader.readBytes(1) }

        var writer = chain.writer(in: memory)
        try writer.write([0xAA, 0xBB, 0xCC, 0xDD] as [UInt8])
        #expect(writer.bytesWritten == 4)
        #expect(throws: ChainAccessError.notEnoughSpace(requested: 5, remaining: 4)) { try writer.write([UInt8](repeating: 0, count: 5)) }
        #expect(writer.bytesWritten == 4)
        #expect(try memory.readBytes(at: GuestAddress(0xB000), count: 3) == [0xAA, 0xBB, 0xCC])
        #expect(try memory.read(UInt8.self, at: GuestAddress(0xC000)) == 0xDD)
    }

    /// A read that ends a segment exactly (a request header in a descriptor of its own) moves
    /// the cursor to the next segment, and a take that cannot be done moves nothing.
    @Test func readsThatEndASegmentGoOnInTheNext() throws {
        let (memory, chain) = try takenChain([(data, 8, false), (GuestAddress(data.rawValue + 8), 8, false), (data2, 4, false)],
                                             contents: [(data, Array(1...16)), (data2, Array(17...20))])
        var reader = chain.reader(in: memory)
        #expect(try reader.read(UInt64.self) == 0x0807_0605_0403_0201)
        #expect(try reader.read(UInt32.self) == 0x0C0B_0A09)
        #expect(try reader.read(UInt32.self) == 0x100F_0E0D)
        #expect(throws: ChainAccessError.notEnoughSpace(requested: 5, remaining: 4)) { try reader.skip(5) }
        #expect(reader.remaining == 4)
        #expect(try reader.readBytes(4) == [17, 18, 19, 20])

        var cursor = SegmentCursor(segments: chain.segments[...])
        var pieces: [UInt64] = []
        #expect(throws: ChainAccessError.memory(.outOfBounds(address: data, length: 1))) {
            try cursor.transfer(12, in: memory) { _, _, _, length, _ throws(GuestMemoryError) in
                pieces.append(UInt64(length))
                if pieces.count == 2 { throw .outOfBounds(address: data, length: 1) }
            }
        }
        #expect(pieces == [8, 4] && cursor.remaining == 20, "a failed take must not move the cursor")
    }

    /// The host addresses found when a chain is checked are used again only by a reader over
    /// the very memory that found them: another memory with the same layout (a restored VM's,
    /// say) reads its own bytes, and a memory without an identity looks every buffer up.
    @Test func readersReuseTranslationsOnlyInTheMemoryThatMadeThem() throws {
        let memory = try testMemory()
        let other = try testMemory()
        var driver = try DriverQueue(memory: memory, size: 8)
        var queue = try driver.makeDeviceQueue()
        try memory.write([1, 2, 3, 4] as [UInt8], to: data)
        try other.write([9, 9, 9, 9] as [UInt8], to: data)
        try driver.addChain([(data, 4, false)])
        let chain = try #require(try queue.popChain(in: memory))
        #expect(chain.translatedBy == memory.hostMappingIdentity)
        #expect(chain.segments.first?.hostAddress != nil)
        for (reading, expected) in [(memory, [1, 2, 3, 4] as [UInt8]), (other, [9, 9, 9, 9])] {
            var reader = chain.reader(in: reading)
            let buffers = try reader.hostBuffers(4)
            #expect(buffers.count == 1 && Array(UnsafeRawBufferPointer(buffers[0])) == expected)
        }
        var plain = chain.reader(in: MemoryWithoutIdentity(base: memory))
        #expect(try plain.hostBuffers(4).map { Array(UnsafeRawBufferPointer($0)) } == [[1, 2, 3, 4]])
    }

    /// A gather straight from the kept addresses covers exactly the readable bytes after the
    /// offset, after what the array held, and declines (nil, appending nothing) whatever it
    /// cannot do without the general path.
    @Test func readableIOVectorsCoverTheBytesAfterTheOffset() throws {
        let (memory, chain) = try takenChain([(data, 12, false), (GuestAddress(data.rawValue + 12), 4, false), (data2, 8, false), (GuestAddress(0xB000), 4, true)],
                                             contents: [(data, Array(1...16)), (data2, Array(17...24))])
        let header = iovec(iov_base: nil, iov_len: 12)
        func gather(from offset: UInt64, in memory: any GuestMemory) -> [[UInt8]]? {
            var vectors = [header]
            guard chain.appendReadableIOVectors(from: offset, in: memory, to: &vectors) else {
                #expect(vectors.count == 1 && vectors[0].iov_len == 12, "a declined gather appended nothing")
                return nil
            }
            #expect(vectors[0].iov_len == 12 && vectors[0].iov_base == nil, "what the array held stays first")
            return vectors.dropFirst().map { Array(UnsafeRawBufferPointer(start: $0.iov_base, count: $0.iov_len)) }
        }
        #expect(gather(from: 12, in: memory) == [[13, 14, 15, 16], Array(17...24)])
        #expect(gather(from: 14, in: memory) == [[15, 16], Array(17...24)])
        #expect(gather(from: 16, in: memory) == [Array(17...24)])
        #expect(gather(from: 24, in: memory) == [])
        #expect(gather(from: 0, in: memory) == [Array(1...12), [13, 14, 15, 16], Array(17...24)], "the writable buffer is not part of it")
        #expect(gather(from: 25, in: memory) == nil, "beyond the readable bytes")
        #expect(gather(from: 12, in: try testMemory()) == nil, "another memory's addresses are not these")
        #expect(gather(from: 12, in: MemoryWithoutIdentity(base: memory)) == nil)
    }

    /// A readable buffer across two touching regions keeps no host address: it is translated
    /// piece by piece, one host buffer per region.
    @Test func aReadableBufferAcrossRegionsIsTranslatedInPieces() throws {
        let memory = try GuestMemoryMmap([
            MemoryRegionSpec(start: GuestAddress(0), size: 1 << 20),
            MemoryRegionSpec(start: GuestAddress(1 << 20), size: 1 << 20),
        ])
        var driver = try DriverQueue(memory: memory, size: 8)
        var queue = try driver.makeDeviceQueue()
        let start = GuestAddress((1 << 20) - 8)
        try memory.write(Array(1...16) as [UInt8], to: start)
        try driver.addChain([(data, 4, false), (start, 16, false)])
        let chain = try #require(try queue.popChain(in: memory))
        #expect(chain.segments.map { $0.hostAddress != nil } == [true, false])
        var vectors: [iovec] = []
        #expect(!chain.appendReadableIOVectors(from: 6, in: memory, to: &vectors), "the spanning buffer has no kept address")
        #expect(!chain.appendReadableIOVectors(from: 2, in: memory, to: &vectors))
        #expect(vectors.isEmpty, "the iovec of the buffer before it was taken back")
        var reader = chain.reader(in: memory)
        try reader.skip(6)
        let buffers = try reader.hostBuffers(14)
        #expect(buffers.map(\.count) == [6, 8])
        #expect(buffers.flatMap { Array(UnsafeRawBufferPointer($0)) } == Array(3...16))

        // Copies go through the kept address where there is one and through the memory where not.
        try memory.write([0xA1, 0xA2, 0xA3, 0xA4] as [UInt8], to: data)
        var copier = chain.reader(in: memory)
        #expect(try copier.readBytes(3) == [0xA1, 0xA2, 0xA3])
        #expect(try copier.readBytes(17) == [0xA4] + Array(1...16))
        #expect(copier.remaining == 0)
    }

    @Test func hostBuffersCoverExactlyTheAskedBytes() throws {
        let memory = try testMemory()
        var driver = try DriverQueue(memory: memory, size: 8)
        var queue = try driver.makeDeviceQueue()
        try driver.addChain([(data, 100, true), (data2, 100, true)])
        let chain = try #require(try queue.popChain(in: memory))
        var writer = chain.writer(in: memory)
        let buffers = try writer.hostBuffers(150)
        #expect(buffers.map(\.count) == [100, 50])
        #expect(writer.remaining == 50 && writer.bytesWritten == 150)
    }
}

/// Guest memory that forwards to another but names no host mapping, as a memory that is not
/// an object would.
private struct MemoryWithoutIdentity: GuestMemory {
    let base: GuestMemoryMmap
    var ramRanges: [GuestAddressRange] { base.ramRanges }

    func unsafeHostBuffer(at address: GuestAddress, length: UInt64, for access: MemoryAccess) throws(GuestMemoryError) -> UnsafeMutableRawBufferPointer {
        unsafe try base.unsafeHostBuffer(at: address, length: length, for: access)
    }
}

/// The chain of `buffers` a fresh queue in a fresh ``testMemory()`` hands over, after
/// `contents` were written there.
private func takenChain(
    _ buffers: [(address: GuestAddress, length: UInt32, writable: Bool)], contents: [(GuestAddress, [UInt8])]
) throws -> (memory: GuestMemoryMmap, chain: DescriptorChain) {
    let memory = try testMemory()
    var driver = try DriverQueue(memory: memory, size: 8)
    var queue = try driver.makeDeviceQueue()
    for (address, bytes) in contents { try memory.write(bytes, to: address) }
    try driver.addChain(buffers)
    return (memory, try #require(try queue.popChain(in: memory)))
}

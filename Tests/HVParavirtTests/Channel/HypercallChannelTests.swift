import HVCore
import HVDevicesTesting
@testable import HVParavirt
import HVTestSupport
import Testing

/// The guest side of the channel, written straight into guest memory.
struct ChannelDriver {
    let memory: GuestMemoryMmap
    let base: GuestAddress
    let slots: UInt32
    var producer: UInt32 = 0

    func slotAddress(_ index: UInt32) -> GuestAddress {
        GuestAddress(base.rawValue + UInt64(ChannelLayout.headerSize) + UInt64(index % slots) * UInt64(ChannelLayout.slotSize))
    }

    /// Writes a request into the next slot without publishing it.
    mutating func queue(_ number: HypercallNumber, _ arguments: [UInt64] = [], flags: UInt32 = 0, cookie: UInt64 = 0) throws {
        let slot = slotAddress(producer)
        try memory.write(number.rawValue.littleEndian, at: slot)
        try memory.write(flags.littleEndian, at: GuestAddress(slot.rawValue + 4))
        try memory.write(cookie.littleEndian, at: GuestAddress(slot.rawValue + 8))
        for index in 0..<ChannelLayout.Slot.argumentCount {
            let value = index < arguments.count ? arguments[index] : 0
            try memory.write(value.littleEndian, at: GuestAddress(slot.rawValue + 16 + UInt64(index) * 8))
        }
        try memory.write(Int64(-999).littleEndian, at: GuestAddress(slot.rawValue + 56))
        producer &+= 1
    }

    func publish(_ value: UInt32? = nil) throws {
        try memory.storeRelease(value ?? producer, at: base)
    }

    func result(_ index: UInt32) throws -> Int64 {
        try memory.read(Int64.self, at: GuestAddress(slotAddress(index).rawValue + 56))
    }

    func header(_ offset: Int) throws -> UInt32 {
        try memory.read(UInt32.self, at: GuestAddress(base.rawValue + UInt64(offset)))
    }
}

@Suite struct HypercallChannelTests {
    func setUp(slots: UInt32 = 8) throws -> (ChannelDriver, HypercallDispatcher, CollectingSink) {
        let memory = try testMemory()
        let sink = CollectingSink()
        let dispatcher = try makeDispatcher(memory: memory, [ConsoleService(output: sink), LifecycleService(), ClockService(monotonic: { 5 })])
        let driver = ChannelDriver(memory: memory, base: GuestAddress(0x10000), slots: slots)
        #expect(dispatcher.call(.channelSetup, 0x10000, UInt64(slots)) == 0)
        #expect(try driver.header(ChannelLayout.Header.slots) == slots)
        return (driver, dispatcher, sink)
    }

    @Test func runsABatchPerNotifyAndWritesEachResult() throws {
        var (driver, dispatcher, sink) = try setUp()
        try driver.memory.write(Array("abc".utf8), to: GuestAddress(0x3000))
        try driver.queue(.null, cookie: 77)
        try driver.queue(.consoleWrite, [0x3000, 3])
        try driver.queue(.clockMonotonic)
        try driver.queue(HypercallNumber(0x0FFF))
        try driver.publish()
        #expect(dispatcher.call(.channelNotify) == 4)
        #expect(try [driver.result(0), driver.result(1), driver.result(2), driver.result(3)] == [0, 3, 5, failure(.notImplemented)])
        #expect(sink.text == "abc")
        #expect(try driver.header(ChannelLayout.Header.responseProducer) == 4)
        #expect(try driver.header(ChannelLayout.Header.requestConsumer) == 4)
        #expect(try driver.memory.read(UInt64.self, at: GuestAddress(driver.slotAddress(0).rawValue + 8)) == 77)
        // Nothing new: nothing runs.
        #expect(dispatcher.call(.channelNotify) == 0)
    }

    @Test func theRingWrapsAroundManyTimes() throws {
        var (driver, dispatcher, _) = try setUp(slots: 4)
        for round in 0..<50 {
            for _ in 0..<(round % 4 + 1) { try driver.queue(.clockMonotonic) }
            try driver.publish()
            #expect(dispatcher.call(.channelNotify) == Int64(round % 4 + 1))
        }
        #expect(dispatcher.statistics(for: .clockMonotonic)?.calls == 123)  // 12 cycles of 1+2+3+4, then 1+2
    }

    @Test(arguments: [UInt32(9), 1000, UInt32.max, 0x8000_0000] as [UInt32])
    func aProducerFarAheadBreaksTheChannelUntilSetUpAgain(producer: UInt32) throws {
        var (driver, dispatcher, _) = try setUp(slots: 8)
        try driver.publish(producer)
        #expect(dispatcher.call(.channelNotify) == failure(.protocolError))
        // Even a sane index afterwards is refused: the guest must set the channel up again.
        try driver.publish(0)
        #expect(dispatcher.call(.channelNotify) == failure(.protocolError))
        #expect(dispatcher.call(.channelSetup, 0x10000, 8) == 0)
        driver.producer = 0
        try driver.queue(.null)
        try driver.publish()
        #expect(dispatcher.call(.channelNotify) == 1)
    }

    @Test func aProducerGoingBackwardsIsFarAhead() throws {
        var (driver, dispatcher, _) = try setUp(slots: 8)
        try driver.queue(.null)
        try driver.publish()
        #expect(dispatcher.call(.channelNotify) == 1)
        try driver.publish(0)  // consumer is 1: 0 - 1 wraps to 2^32 - 1 pending
        #expect(dispatcher.call(.channelNotify) == failure(.protocolError))
    }

    @Test func requestsThatStopOrBlockOrNestAreRefusedInTheirSlot() throws {
        var (driver, dispatcher, _) = try setUp()
        try driver.queue(.exit, [1])
        try driver.queue(.abort, [0, 4])
        try driver.queue(.channelNotify)
        try driver.queue(.channelSetup, [0x20000, 4])
        try driver.queue(.null, flags: 1)
        try driver.publish()
        #expect(dispatcher.call(.channelNotify) == 5)
        for index in 0..<UInt32(5) { #expect(try driver.result(index) == failure(.invalid)) }
    }

    @Test func notifyBeforeSetupIsInvalid() throws {
        let dispatcher = try makeDispatcher(memory: testMemory(), [])
        #expect(dispatcher.call(.channelNotify) == failure(.invalid))
    }

    @Test(arguments: [
        (0x10000, 0, HypercallErrno.invalid), (0x10000, 3, .invalid), (0x10000, 8192, .invalid), (0x10000, UInt64.max, .invalid),
        (0x10008, 4, .invalid),                                   // not 64-byte aligned
        (firstRegionEnd - 64, 4, .fault),                         // slots run into the hole
        (readOnlyAddress.rawValue, 4, .fault),                    // the host writes the ring
        (UInt64.max - 63, 1, .fault),                             // wraps
    ] as [(UInt64, UInt64, HypercallErrno)])
    func setupRefusesBadRings(address: UInt64, slots: UInt64, code: HypercallErrno) throws {
        let dispatcher = try makeDispatcher(memory: testMemory(), [])
        #expect(dispatcher.call(.channelSetup, address, slots) == failure(code))
    }

    @Test func randomRingContentsNeverEscapeRAM() throws {
        // Random slots with random numbers and arguments: every result is a value or an error
        // code, and the host never touches memory outside RAM (the mapping would fault).
        let memory = try testMemory()
        let sink = CollectingSink()
        let disk = try TemporaryDisk(size: 64 << 10)
        let dispatcher = try makeDispatcher(memory: memory, [
            ConsoleService(output: sink), RandomService(), BlockService(fileDescriptor: disk.descriptor, readOnly: false),
        ])
        var generator = SeededGenerator(seed: 0x5EED)
        #expect(dispatcher.call(.channelSetup, 0x10000, 64) == 0)
        var producer: UInt32 = 0
        for _ in 0..<40 {
            let batch = UInt32(generator.next() % 65)
            for index in 0..<batch {
                let slot = GuestAddress(0x10000 + 64 + UInt64((producer &+ index) % 64) * 64)
                var bytes = (0..<64).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
                bytes[0] = UInt8(generator.next() % 17)  // mostly real numbers
                bytes[1] = 0; bytes[2] = 0; bytes[3] = 0
                bytes[4] = generator.next() % 8 == 0 ? 1 : 0
                bytes[5] = 0; bytes[6] = 0; bytes[7] = 0
                try memory.write(bytes, to: slot)
            }
            producer &+= batch
            try memory.storeRelease(producer, at: GuestAddress(0x10000))
            #expect(dispatcher.call(.channelNotify) == Int64(batch))
        }
    }
}

import HVCore
import HVDevicesTesting
@testable import HVParavirt
import HVTestSupport
import Testing

@Suite struct HypercallDispatcherSnapshotTests {
    static let ring = GuestAddress(0x10000)

    func dispatcher(_ memory: GuestMemoryMmap) throws -> HypercallDispatcher {
        try makeDispatcher(memory: memory, [ClockService(monotonic: { 5 })])
    }

    func saved(_ dispatcher: HypercallDispatcher) -> [UInt8] {
        var encoder = SnapshotEncoder()
        dispatcher.saveState(to: &encoder)
        return encoder.bytes
    }

    func restore(_ bytes: [UInt8], into dispatcher: HypercallDispatcher) throws(SnapshotError) {
        var decoder = SnapshotDecoder(bytes, context: "hypercalls section")
        try dispatcher.restoreState(from: &decoder, version: dispatcher.snapshotVersion)
    }

    /// The guest's ring goes on where it was: a restored dispatcher (over the same memory, as a
    /// restored machine's RAM is) runs only the requests published after the save.
    @Test func theChannelGoesOnWhereItWas() throws {
        let memory = try testMemory()
        let original = try dispatcher(memory)
        var driver = ChannelDriver(memory: memory, base: Self.ring, slots: 4)
        #expect(original.call(.channelSetup, Self.ring.rawValue, 4) == 0)
        for _ in 0..<3 { try driver.queue(.clockMonotonic) }
        try driver.publish()
        #expect(original.call(.channelNotify) == 3)

        let restored = try dispatcher(memory)
        try restore(saved(original), into: restored)
        for _ in 0..<2 { try driver.queue(.clockMonotonic) }
        try driver.publish()
        #expect(restored.call(.channelNotify) == 2)
        #expect(try driver.result(3) == 5 && driver.result(4) == 5)
        #expect(try driver.header(ChannelLayout.Header.requestConsumer) == 5)
    }

    @Test func noChannelAndABrokenChannelComeBackAsTheyWere() throws {
        let memory = try testMemory()
        let fresh = try dispatcher(memory)
        let restored = try dispatcher(memory)
        #expect(restored.call(.channelSetup, Self.ring.rawValue, 8) == 0)
        try restore(saved(fresh), into: restored)
        #expect(restored.call(.channelNotify) == failure(.invalid))

        let broken = try dispatcher(memory)
        #expect(broken.call(.channelSetup, Self.ring.rawValue, 8) == 0)
        try ChannelDriver(memory: memory, base: Self.ring, slots: 8).publish(1000)
        #expect(broken.call(.channelNotify) == failure(.protocolError))
        let again = try dispatcher(memory)
        try restore(saved(broken), into: again)
        try ChannelDriver(memory: memory, base: Self.ring, slots: 8).publish(0)
        #expect(again.call(.channelNotify) == failure(.protocolError))
    }

    static func channel(base: UInt64, slots: UInt32, flag: UInt8 = 1) -> [UInt8] {
        var encoder = SnapshotEncoder()
        encoder.append(flag)
        encoder.append(base)
        encoder.append(slots)
        encoder.append(UInt32(0))
        encoder.append(false)
        return encoder.bytes
    }

    /// A saved channel is checked as its setup was: out of RAM, overflowing, misaligned, of a
    /// size setup refuses, an unknown flag, cut short or followed by more bytes: refused.
    @Test(arguments: [
        channel(base: firstRegionEnd, slots: 8), channel(base: UInt64.max - 63, slots: 8), channel(base: holeAddress.rawValue, slots: 8),
        channel(base: 0x10004, slots: 8), channel(base: 0x10000, slots: 3), channel(base: 0x10000, slots: 0),
        channel(base: 0x10000, slots: UInt32(ChannelLayout.maximumSlots) * 2), channel(base: 0x10000, slots: 8, flag: 2),
        Array(channel(base: 0x10000, slots: 8).dropLast(2)), channel(base: 0x10000, slots: 8) + [0], [0, 0], [],
    ])
    func hostileChannelStateIsRefused(bytes: [UInt8]) throws {
        let restored = try dispatcher(testMemory())
        #expect(throws: SnapshotError.self) { try restore(bytes, into: restored) }
        #expect(restored.call(.channelNotify) == failure(.invalid))
    }
}

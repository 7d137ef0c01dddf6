import HVCore
import HVDevices
import HVDevicesTesting
import HVTestSupport
import Testing

/// Packets through real descriptor chains in a test memory: the transmit side parsed, the
/// receive side written, and every chain shape a packet cannot have refused.
@Suite struct VsockPacketTests {
    static let headerAddress = GuestAddress(0x10000)
    static let dataAddress = GuestAddress(0x20000)
    static let sample = VsockHeader(from: (3, 1024), to: (2, 5000), operation: .readWrite, length: 10,
                                    bufferAllocation: 65536, forwardCount: 7)

    /// A chain of `buffers` published by a driver and popped by the device.
    func chain(_ memory: GuestMemoryMmap, _ buffers: [(address: GuestAddress, length: UInt32, writable: Bool)]) throws -> DescriptorChain {
        var driver = try DriverQueue(memory: memory, size: 16)
        var queue = try driver.makeDeviceQueue()
        try driver.addChain(buffers)
        return try #require(try queue.popChain(in: memory))
    }

    @Test func aHeaderThenDataInTheirOwnDescriptors() throws {
        let memory = try testMemory()
        try memory.write(Self.sample.bytes, to: Self.headerAddress)
        try memory.write(Array("0123456789".utf8), to: Self.dataAddress)
        let packet = try VsockTransmitPacket(chain(memory, [(Self.headerAddress, 44, false), (Self.dataAddress, 10, false)]), in: memory)
        #expect(packet.header == Self.sample)
        #expect(packet.dataBytes == Array("0123456789".utf8))
    }

    @Test func oneDescriptorOrAHeaderSplitAnywhereReadTheSame() throws {
        let memory = try testMemory()
        let bytes = Self.sample.bytes + Array("0123456789".utf8) + [0xEE, 0xEE]  // Two bytes past len, ignored.
        try memory.write(bytes, to: Self.headerAddress)
        let whole = try VsockTransmitPacket(chain(memory, [(Self.headerAddress, UInt32(bytes.count), false)]), in: memory)
        #expect(whole.header == Self.sample && whole.dataBytes == Array("0123456789".utf8))
        for split in [1, 20, 43, 44, 50] {
            let second = GuestAddress(Self.dataAddress.rawValue + 0x100)
            try memory.write(Array(bytes[..<split]), to: Self.dataAddress)
            try memory.write(Array(bytes[split...]), to: second)
            let packet = try VsockTransmitPacket(chain(memory, [(Self.dataAddress, UInt32(split), false),
                                                                (second, UInt32(bytes.count - split), false)]), in: memory)
            #expect(packet.header == Self.sample && packet.dataBytes == Array("0123456789".utf8), "split at \(split)")
        }
    }

    /// What a case is, the chain's descriptors (length, device-writable), the header's len.
    typealias Shape = (what: String, descriptors: [(UInt32, Bool)], length: UInt32)

    static let hostileTransmit: [Shape] = [
        ("device-writable descriptors", [(44, false), (10, true)], 10),
        ("shorter than a header", [(43, false)], 0),
        ("less data than the header says", [(44, false), (9, false)], 10),
        ("more data than a packet may carry", [(44, false), (0x10001, false)], 0x10001),
    ]

    static let hostileReceive: [Shape] = [
        ("device-readable descriptors", [(44, false), (100, true)], 0),
        ("no room for the header", [(43, true)], 0),
        ("no room for the data", [(44, true), (99, true)], 100),
    ]

    @Test("chains that cannot be a transmitted packet are refused", arguments: hostileTransmit)
    func hostileTransmitChains(_ what: String, shape: [(UInt32, Bool)], length: UInt32) throws {
        let memory = try testMemory()
        var header = Self.sample
        header.length = length
        try memory.write(header.bytes, to: Self.headerAddress)
        let buffers = shape.enumerated().map { index, buffer in
            (address: index == 0 ? Self.headerAddress : Self.dataAddress, length: buffer.0, writable: buffer.1)
        }
        #expect(throws: VsockPacketError.self, "\(what)") { try VsockTransmitPacket(chain(memory, buffers), in: memory) }
    }

    @Test func aReceivedPacketIsTheHeaderThenWhatTheFillWrote() throws {
        let memory = try testMemory()
        let received = try chain(memory, [(Self.headerAddress, 30, true), (Self.dataAddress, 4096, true)])
        var header = Self.sample
        header.length = 100
        let used = try VsockReceivePacket.write(header, into: received, in: memory) { buffers in
            // The data's place starts 14 bytes into the second buffer (the header took 30 + 14).
            #expect(buffers.count == 1 && buffers[0].count == 100)
            for index in 0..<60 { unsafe buffers[0][index] = UInt8(index) }
            return 60
        }
        #expect(used == 44 + 60)
        let written = try memory.readBytes(at: Self.headerAddress, count: 30) + memory.readBytes(at: Self.dataAddress, count: 14 + 60)
        var expected = header
        expected.length = 60
        #expect(VsockHeader(bytes: written) == expected)
        #expect(Array(written[44...]) == (0..<60).map { UInt8($0) })
    }

    @Test func aFillCannotClaimMoreThanItWasGiven() throws {
        let memory = try testMemory()
        let received = try chain(memory, [(Self.headerAddress, 4096, true)])
        var header = Self.sample
        header.length = 8
        let used = try VsockReceivePacket.write(header, into: received, in: memory) { _ in 9999 }
        #expect(used == 44 + 8)
        #expect(try VsockHeader(bytes: memory.readBytes(at: Self.headerAddress, count: 44))?.length == 8)
        let control = try chain(memory, [(Self.dataAddress, 44, true)])
        let reset = VsockHeader(from: (2, 5000), to: (3, 1024), operation: .reset)
        #expect(try VsockReceivePacket.write(reset, into: control, in: memory) == 44)
        #expect(try VsockHeader(bytes: memory.readBytes(at: Self.dataAddress, count: 44)) == reset)
    }

    @Test("receive chains a packet cannot go into are refused", arguments: hostileReceive)
    func hostileReceiveChains(_ what: String, shape: [(UInt32, Bool)], length: UInt32) throws {
        let memory = try testMemory()
        let buffers = shape.enumerated().map { index, buffer in
            (address: index == 0 ? Self.headerAddress : Self.dataAddress, length: buffer.0, writable: buffer.1)
        }
        var header = Self.sample
        header.length = length
        let received = try chain(memory, buffers)
        #expect(throws: VsockPacketError.self, "\(what)") { try VsockReceivePacket.write(header, into: received, in: memory) }
    }
}

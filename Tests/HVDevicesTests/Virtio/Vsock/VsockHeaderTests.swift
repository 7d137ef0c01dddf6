@testable import HVDevices
import HVTestSupport
import Testing

@Suite struct VsockHeaderTests {
    @Test func everyFieldRoundTripsLittleEndian() {
        var generator = SeededGenerator(seed: 44)
        for _ in 0..<200 {
            var header = VsockHeader()
            header.sourceCID = UInt64.random(in: .min ... .max, using: &generator)
            header.destinationCID = UInt64.random(in: .min ... .max, using: &generator)
            header.sourcePort = UInt32.random(in: .min ... .max, using: &generator)
            header.destinationPort = UInt32.random(in: .min ... .max, using: &generator)
            header.length = UInt32.random(in: .min ... .max, using: &generator)
            header.type = UInt16.random(in: .min ... .max, using: &generator)
            header.operationCode = UInt16.random(in: .min ... .max, using: &generator)
            header.flags = UInt32.random(in: .min ... .max, using: &generator)
            header.bufferAllocation = UInt32.random(in: .min ... .max, using: &generator)
            header.forwardCount = UInt32.random(in: .min ... .max, using: &generator)
            let bytes = header.bytes
            #expect(bytes.count == VsockHeader.size)
            #expect(VsockHeader(bytes: bytes) == header)
            #expect(bytes.withUnsafeBytes { VsockHeader(loading: $0) } == header)
            #expect(header.withBytes { Array($0) } == bytes)
        }
        // Little-endian: the low byte of the source CID comes first.
        var header = VsockHeader()
        header.sourceCID = 0x1122_3344_5566_7788
        #expect(header.bytes.prefix(8) == [0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11])
    }

    @Test("a short buffer is no header; a longer one is read from its start", arguments: [0, 1, 43])
    func shortBuffers(count: Int) {
        #expect(VsockHeader(bytes: [UInt8](repeating: 0xFF, count: count)) == nil)
        #expect([UInt8](repeating: 0xFF, count: count).withUnsafeBytes { VsockHeader(loading: $0) } == nil)
    }

    @Test func trailingBytesAreIgnored() {
        let header = VsockHeader(from: (3, 1024), to: (2, 80), operation: .readWrite, length: 5)
        #expect(VsockHeader(bytes: header.bytes + [1, 2, 3, 4, 5]) == header)
    }

    @Test func unknownOperationsAndFlagsAreVisibleAsRaw() {
        var header = VsockHeader()
        for code in UInt16(8)...UInt16(300) {
            header.operationCode = code
            #expect(header.operation == nil)
        }
        for operation in VsockHeader.Operation.allCases {
            header.operationCode = operation.rawValue
            #expect(header.operation == operation)
        }
        header.flags = 0xFFFF_FFFF
        #expect(header.shutdownFlags.contains([.receive, .send]))
        #expect(header.shutdownFlags.rawValue == 0xFFFF_FFFF)
    }

    @Test func theStreamInitializerFillsTheStreamType() {
        let header = VsockHeader(from: (3, 1), to: (2, 2), operation: .request, bufferAllocation: 65536)
        #expect(header.type == VsockHeader.streamType)
        #expect(header.operation == .request && header.bufferAllocation == 65536 && header.length == 0)
    }
}

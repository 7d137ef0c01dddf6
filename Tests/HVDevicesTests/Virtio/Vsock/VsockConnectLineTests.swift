import HVDevices
import Testing

@Suite struct VsockConnectLineTests {
    func parse(_ text: String) -> VsockConnectLine.Parse { VsockConnectLine.parse(Array(text.utf8)) }

    @Test func aConnectLineNamesThePortAndItsLength() {
        #expect(parse("CONNECT 52\n") == .connect(port: 52, length: 11))
        #expect(parse("CONNECT 52\r\n") == .connect(port: 52, length: 12))
        #expect(parse("CONNECT 4294967295\n") == .connect(port: UInt32.max, length: 19))
        // What follows the newline is the stream's first data, not the line's.
        #expect(parse("CONNECT 1\nCONNECT 2\n") == .connect(port: 1, length: 10))
    }

    @Test func aLineWithoutItsNewlineIsIncompleteUntilItCannotBeOne() {
        #expect(parse("") == .incomplete)
        #expect(parse("CONNECT 5") == .incomplete)
        #expect(parse(String(repeating: "7", count: 31)) == .incomplete)
        guard case .malformed = parse(String(repeating: "7", count: 32)) else {
            Issue.record("32 bytes without a newline is not the protocol")
            return
        }
    }

    @Test(arguments: ["CONNECT abc\n", "CONNECT\n", "CONNECT \n", "connect 52\n", "CONNECT -1\n", "CONNECT 4294967296\n",
                      "CONNECT 52 \n", "CONNECT  52\n", "OK 52\n", "CONNECT 00000000000052\n"])
    func anythingElseIsMalformed(line: String) {
        guard case .malformed = parse(line) else {
            Issue.record("\(line.debugDescription) was accepted")
            return
        }
    }

    @Test func theAnswerNamesTheHostPort() {
        #expect(VsockConnectLine.accepted(hostPort: 1_073_741_824) == Array("OK 1073741824\n".utf8))
    }
}

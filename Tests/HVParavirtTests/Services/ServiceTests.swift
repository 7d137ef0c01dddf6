import HVCore
import HVDevicesTesting
@testable import HVParavirt
import HVTestSupport
import Testing

@Suite struct ConsoleServiceTests {
    @Test func writesTheGuestsBytes() throws {
        let memory = try testMemory()
        let sink = CollectingSink()
        let dispatcher = try makeDispatcher(memory: memory, [ConsoleService(output: sink)])
        try memory.write(Array("hello\n".utf8), to: GuestAddress(0x2000))
        #expect(dispatcher.call(.consoleWrite, 0x2000, 6) == 6)
        #expect(dispatcher.call(.consoleWrite, 0x2000, 0) == 0)
        #expect(sink.text == "hello\n")
    }

    @Test(arguments: [
        (firstRegionEnd - 2, 16, HypercallErrno.fault),          // runs off the first region into the hole
        (holeAddress.rawValue, 1, .fault),                         // in the hole
        (8 << 20, 1, .fault),                                      // beyond RAM
        (UInt64.max - 3, 16, .fault),                              // wraps around
        (0x2000, UInt64(HypercallABI.maximumSmallTransfer) + 1, .tooBig),
        (0x2000, UInt64.max, .tooBig),
    ] as [(UInt64, UInt64, HypercallErrno)])
    func refusesBadBuffers(address: UInt64, length: UInt64, code: HypercallErrno) throws {
        let sink = CollectingSink()
        let dispatcher = try makeDispatcher(memory: testMemory(), [ConsoleService(output: sink)])
        #expect(dispatcher.call(.consoleWrite, address, length) == failure(code))
        #expect(sink.bytes.isEmpty)
    }

    @Test func readOnlyMemoryMayBeWritten() throws {
        let sink = CollectingSink()
        let dispatcher = try makeDispatcher(memory: testMemory(), [ConsoleService(output: sink)])
        #expect(dispatcher.call(.consoleWrite, readOnlyAddress.rawValue, 4) == 4)
        #expect(sink.bytes == [0, 0, 0, 0])
    }
}

@Suite struct ClockAndRandomServiceTests {
    @Test func clocksComeFromTheService() throws {
        let dispatcher = try makeDispatcher(memory: testMemory(), [ClockService(monotonic: { 42 }, wall: { 1_700_000_000_000_000_000 })])
        #expect(dispatcher.call(.clockMonotonic) == 42)
        #expect(dispatcher.call(.clockWall) == 1_700_000_000_000_000_000)
    }

    @Test func hostClocksMove() throws {
        let dispatcher = try makeDispatcher(memory: testMemory(), [ClockService()])
        let first = dispatcher.call(.clockMonotonic)
        #expect(first > 0)
        #expect(dispatcher.call(.clockMonotonic) >= first)
        #expect(dispatcher.call(.clockWall) > 1_600_000_000 * 1_000_000_000)
    }

    @Test func randomFillsTheBuffer() throws {
        let memory = try testMemory()
        let dispatcher = try makeDispatcher(memory: memory, [RandomService()])
        #expect(dispatcher.call(.random, 0x3000, 4096) == 4096)
        let bytes = try memory.readBytes(at: GuestAddress(0x3000), count: 4096)
        #expect(Set(bytes).count > 200)
    }

    @Test(arguments: [
        (firstRegionEnd - 8, 16, HypercallErrno.fault),
        (readOnlyAddress.rawValue, 16, .fault),                    // must be writable
        (holeAddress.rawValue - 8, 16, .fault),
        (UInt64.max, 1, .fault),
        (0x3000, 0, .invalid),
        (0x3000, 4097, .tooBig),
    ] as [(UInt64, UInt64, HypercallErrno)])
    func randomRefusesBadBuffers(address: UInt64, length: UInt64, code: HypercallErrno) throws {
        let memory = try testMemory()
        let dispatcher = try makeDispatcher(memory: memory, [RandomService()])
        #expect(dispatcher.call(.random, address, length) == failure(code))
        // Nothing was written before the refusal.
        if address == firstRegionEnd - 8 { #expect(try memory.readBytes(at: GuestAddress(address), count: 8) == [0, 0, 0, 0, 0, 0, 0, 0]) }
    }
}

@Suite struct LifecycleServiceTests {
    @Test func exitStopsWithTheStatus() throws {
        let dispatcher = try makeDispatcher(memory: testMemory(), [LifecycleService()])
        let result = dispatcher.dispatch(.exit, HypercallArguments(UInt64(bitPattern: -3)), origin: .trap(vcpu: 0))
        #expect(result == .stop(.exit(status: -3)))
    }

    @Test func abortCarriesTheMessageWithControlCharactersEscaped() throws {
        let memory = try testMemory()
        let dispatcher = try makeDispatcher(memory: memory, [LifecycleService()])
        try memory.write(Array("bad\u{1B}[2J\nend".utf8), to: GuestAddress(0x100))
        let result = dispatcher.dispatch(.abort, HypercallArguments(0x100, 11), origin: .trap(vcpu: 0))
        #expect(result == .stop(.abort(message: "bad\\u{1b}[2J\nend")))
    }

    /// C1 controls (CSI U+009B, DCS U+0090, ...) drive terminals as their ESC forms do.
    @Test func abortEscapesC1ControlsToo() throws {
        let text = "a\u{9B}2Jb\u{90}c\u{85}d\u{A0}e"
        #expect(LifecycleService.printable(Array(text.utf8)) == "a\\u{9b}2Jb\\u{90}c\\u{85}d\u{A0}e")
    }

    /// A status no process exit status can carry fails, instead of being cut to its low byte.
    @Test(arguments: [(Int32(0), Int32(0)), (1, 1), (255, 255), (256, 255), (512, 255), (-1, 255), (.min, 255)])
    func exitStatusesMapToProcessExitCodes(status: Int32, code: Int32) {
        #expect(GuestStopRequest.exit(status: status).processExitCode == code)
        #expect(GuestStopRequest.abort(message: "x").processExitCode == 255)
    }

    @Test func abortWithAnUnreadableMessageStillStops() throws {
        let dispatcher = try makeDispatcher(memory: testMemory(), [LifecycleService()])
        let result = dispatcher.dispatch(.abort, HypercallArguments(holeAddress.rawValue, 10), origin: .trap(vcpu: 0))
        guard case let .stop(.abort(message)) = result else {
            Issue.record("expected an abort, got \(result)")
            return
        }
        #expect(message.contains("unreadable"))
        // An absurd length is clipped, not trusted.
        let long = dispatcher.dispatch(.abort, HypercallArguments(0, UInt64.max), origin: .trap(vcpu: 0))
        #expect(long == .stop(.abort(message: String(repeating: "\\u{0}", count: HypercallABI.maximumSmallTransfer))))
    }
}

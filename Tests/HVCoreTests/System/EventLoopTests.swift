import Glibc
import HVCore
import SystemPackage
import Testing

@Suite struct EventLoopTests {
    /// Polls `condition` for up to five seconds (a watchdog, not a timing assertion).
    func eventually(_ condition: () -> Bool) -> Bool {
        for _ in 0..<5000 where !condition() { usleep(1000) }
        return condition()
    }

    @Test func aLevelTriggeredHandlerIsCalledUntilTheDescriptorIsDrained() throws {
        let loop = try EventLoop(name: "loop-level")
        defer { loop.shutdown() }
        let events = try EventFD(nonBlocking: true)
        let calls = Locked(0)
        try loop.register(events.fileDescriptor) {
            let count = calls.withLock { value in
                value += 1
                return value
            }
            // Drained on the third call only: the loop must call again meanwhile.
            if count == 3 { _ = try? events.consume() }
        }
        try events.signal()
        #expect(eventually { calls.withLock { $0 } >= 3 })
        usleep(20_000)
        #expect(calls.withLock { $0 } == 3)
    }

    @Test func anEdgeTriggeredHandlerIsCalledOncePerChange() throws {
        let loop = try EventLoop(name: "loop-edge")
        defer { loop.shutdown() }
        let (ours, theirs) = try UnixSocket.pair()
        defer { close(ours.rawValue); close(theirs.rawValue) }
        let calls = Locked(0)
        try loop.register(ours, for: [.readable], trigger: .edge) { calls.withLock { $0 += 1 } }
        #expect(write(theirs.rawValue, "a", 1) == 1)
        #expect(eventually { calls.withLock { $0 } == 1 })
        // Not drained, yet not called again: no new edge.
        usleep(20_000)
        #expect(calls.withLock { $0 } == 1)
        #expect(write(theirs.rawValue, "b", 1) == 1)
        #expect(eventually { calls.withLock { $0 } == 2 })
    }

    @Test func writableReadinessReportsRoomAfterTheSocketWasFull() throws {
        let loop = try EventLoop(name: "loop-writable")
        defer { loop.shutdown() }
        let (ours, theirs) = try UnixSocket.pair()
        defer { close(ours.rawValue); close(theirs.rawValue) }
        var chunk = [UInt8](repeating: 7, count: 65536)
        var filled = 0
        while true {
            let written = write(ours.rawValue, &chunk, chunk.count)
            guard written > 0 else { break }
            filled += written
        }
        let calls = Locked(0)
        try loop.register(ours, for: [.writable], trigger: .edge) { calls.withLock { $0 += 1 } }
        usleep(20_000)
        #expect(calls.withLock { $0 } == 0, "full: no room to report")
        var sink = [UInt8](repeating: 0, count: 65536)
        var drained = 0
        while drained < filled {
            let got = read(theirs.rawValue, &sink, sink.count)
            guard got > 0 else { break }
            drained += got
        }
        #expect(eventually { calls.withLock { $0 } >= 1 })
    }

    @Test func aOneShotHandlerSleepsUntilRearmed() throws {
        let loop = try EventLoop(name: "loop-oneshot")
        defer { loop.shutdown() }
        let (ours, theirs) = try UnixSocket.pair()
        defer { close(ours.rawValue); close(theirs.rawValue) }
        let calls = Locked(0)
        let registration = try loop.register(ours, for: [.readable], trigger: .oneShot) { calls.withLock { $0 += 1 } }
        #expect(write(theirs.rawValue, "a", 1) == 1)
        #expect(eventually { calls.withLock { $0 } == 1 })
        // More data, but the registration sleeps.
        #expect(write(theirs.rawValue, "b", 1) == 1)
        usleep(20_000)
        #expect(calls.withLock { $0 } == 1)
        // Rearmed while data waits: called at once.
        try loop.rearm(registration, for: .readable)
        #expect(eventually { calls.withLock { $0 } == 2 })
        // Rearmed for nothing: asleep whatever comes.
        try loop.rearm(registration, for: [])
        #expect(write(theirs.rawValue, "c", 1) == 1)
        usleep(20_000)
        #expect(calls.withLock { $0 } == 2)
    }
}

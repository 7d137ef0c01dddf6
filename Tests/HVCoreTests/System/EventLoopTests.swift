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

    /// Submitted work runs on the loop's thread while the caller goes on; its result waits to
    /// be asked for, and is the same when asked again.
    @Test func submittedWorkRunsOnTheLoopAndItsResultWaits() throws {
        let loop = try EventLoop(name: "loop-submit")
        defer { loop.shutdown() }
        let caller = pthread_self()
        let gate = Locked(false)
        let pending = try #require(loop.submit { () -> Bool in
            // Held until the caller has gone on past submit: it did not wait for the work.
            while !gate.withLock({ $0 }) { usleep(1000) }
            return pthread_equal(pthread_self(), caller) == 0
        })
        gate.withLock { $0 = true }
        #expect(pending.wait() == true)
        #expect(pending.wait() == true)
        #expect(loop.perform { 7 } == 7)
    }

    /// Work queued on a loop that stops before running it gives nil instead of a wait forever,
    /// and a stopped loop takes no more.
    @Test func workOnALoopThatStopsGivesNil() throws {
        let loop = try EventLoop(name: "loop-stopping")
        let blocker = Locked(true), started = Locked(false)
        let first = try #require(loop.submit { () -> Int in
            started.withLock { $0 = true }
            while blocker.withLock({ $0 }) { usleep(1000) }
            return 1
        })
        // Queued while the first runs, so still queued when the loop is told to stop.
        #expect(eventually { started.withLock { $0 } })
        let second = try #require(loop.submit { 2 })
        let stopper = try HostThread(name: "stopper") { loop.shutdown() }
        // The first work is let go only once the shutdown has begun (a stopping loop takes no
        // more work): a fixed sleep here was too short under ThreadSanitizer.
        #expect(eventually { loop.submit { 0 } == nil })
        blocker.withLock { $0 = false }
        stopper.join()
        #expect(first.wait() == 1)
        #expect(second.wait() == nil)
        #expect(loop.submit { 3 } == nil)
        #expect(loop.perform { 4 } == nil)
    }
}

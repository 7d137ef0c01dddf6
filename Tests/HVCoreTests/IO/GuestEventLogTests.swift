import HVCore
import Logging
import Synchronization
import Testing

/// Keeps every line logged through it.
private final class RecordingLog: Sendable {
    struct Line: Sendable { let message: String; let metadata: [String: String] }
    let lines = Locked<[Line]>([])

    var logger: Logger {
        Logger(label: "test") { _ in Handler(log: self) }
    }

    struct Handler: LogHandler {
        let log: RecordingLog
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace
        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }
        func log(event: LogEvent) {
            let fields = (event.metadata ?? [:]).mapValues { "\($0)" }
            log.lines.withLock { $0.append(Line(message: "\(event.message)", metadata: fields)) }
        }
    }
}

@Suite struct GuestEventLogTests {
    /// A guest's flood of bad requests: a bounded number of lines, an exact count, and the
    /// next line after a pause says how many were left out.
    @Test func aFloodLogsABurstThenOneLinePerIntervalAndCountsEverything() {
        let recording = RecordingLog()
        let now = Atomic<UInt64>(1_000_000_000)
        let events = GuestEventLog(logger: recording.logger, burst: 10, interval: .seconds(1),
                                   clock: { now.load(ordering: .relaxed) })
        for _ in 0..<10_000 { events.record("malformed-chain", "refused a malformed chain") }
        #expect(recording.lines.withLock { $0.count } == 10)
        #expect(events.count(of: "malformed-chain") == 10_000)

        now.add(1_000_000_000, ordering: .relaxed)
        events.record("malformed-chain", "refused a malformed chain")
        let last = recording.lines.withLock { $0.last }
        #expect(recording.lines.withLock { $0.count } == 11)
        #expect(last?.metadata["suppressed"] == "9990")
        #expect(last?.metadata["event"] == "malformed-chain")
        #expect(events.count(of: "malformed-chain") == 10_001)
    }

    @Test func kindsHaveBucketsOfTheirOwn() {
        let recording = RecordingLog()
        let events = GuestEventLog(logger: recording.logger, burst: 2, interval: .seconds(60), clock: { 5 })
        for _ in 0..<100 { events.record("a", "a") }
        for _ in 0..<100 { events.record("b", "b") }
        #expect(recording.lines.withLock { $0.map(\.message) } == ["a", "a", "b", "b"])
        #expect(events.counts == ["a": 100, "b": 100])
    }
}

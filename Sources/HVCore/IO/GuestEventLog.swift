import Logging

/// A log for events a guest causes (malformed requests, refused accesses), which a hostile guest
/// can cause as fast as it runs. Each kind of event has a token bucket: up to ``burst`` lines
/// at once, then one per ``interval``; what the bucket refuses is counted, and the next line
/// that gets through says how many were suppressed. Every event is counted either way
/// (``count(of:)``), so nothing is lost for diagnosis and the host's log stays bounded.
public final class GuestEventLog: Sendable {
    /// Lines one kind may log at once.
    public let burst: Int
    /// How often one more line of a kind is allowed after the burst.
    public let interval: Duration
    private let logger: Logger
    private let clock: @Sendable () -> UInt64

    private struct Bucket {
        var tokens: Double
        var updated: UInt64
        var events: UInt64 = 0
        var suppressedSinceLine: UInt64 = 0
    }

    private let buckets = Locked<[String: Bucket]>([:])

    /// A log writing to `logger`, `burst` lines per kind at once and then one per `interval`.
    /// `clock` (monotonic nanoseconds) is for tests.
    public init(logger: Logger, burst: Int = 10, interval: Duration = .seconds(1),
                clock: @escaping @Sendable () -> UInt64 = { HostClock.monotonicNanoseconds() }) {
        self.logger = logger
        self.burst = max(burst, 1)
        self.interval = interval
        self.clock = clock
    }

    /// Records one event of `kind` and logs it at `level` if its bucket allows.
    public func record(_ kind: String, level: Logger.Level = .warning, _ message: @autoclosure () -> Logger.Message,
                       metadata: @autoclosure () -> Logger.Metadata = [:]) {
        let now = clock()
        let intervalNanoseconds = Double(interval.components.seconds) * 1e9 + Double(interval.components.attoseconds) / 1e9
        let suppressed: UInt64? = buckets.withLock { buckets in
            var bucket = buckets[kind] ?? Bucket(tokens: Double(burst), updated: now)
            bucket.events += 1
            if intervalNanoseconds > 0, now > bucket.updated {
                bucket.tokens = min(Double(burst), bucket.tokens + Double(now - bucket.updated) / intervalNanoseconds)
            }
            bucket.updated = now
            defer { buckets[kind] = bucket }
            guard bucket.tokens >= 1 else {
                bucket.suppressedSinceLine += 1
                return nil
            }
            bucket.tokens -= 1
            defer { bucket.suppressedSinceLine = 0 }
            return bucket.suppressedSinceLine
        }
        guard let suppressed else { return }
        var fields = metadata()
        fields["event"] = "\(kind)"
        if suppressed > 0 { fields["suppressed"] = "\(suppressed)" }
        logger.log(level: level, message(), metadata: fields)
    }

    /// Every event of `kind` recorded, logged or not.
    public func count(of kind: String) -> UInt64 {
        buckets.withLock { $0[kind]?.events ?? 0 }
    }

    /// Every kind recorded so far, with its count.
    public var counts: [String: UInt64] {
        buckets.withLock { $0.mapValues(\.events) }
    }
}

import Synchronization

/// A source of nanoseconds for a ``RateLimiter``: the host's monotonic clock, or a test's.
public protocol RateLimiterClock: Sendable {
    /// The time now, in nanoseconds from any fixed origin.
    func nanoseconds() -> UInt64
}

/// CLOCK_MONOTONIC.
public struct MonotonicClock: RateLimiterClock {
    /// The host's monotonic clock.
    public init() {}
    /// CLOCK_MONOTONIC in nanoseconds.
    public func nanoseconds() -> UInt64 { HostClock.monotonicNanoseconds() }
}

/// How a rate limiter's two buckets are set: bandwidth in bytes and operations, each optional.
public struct RateLimit: Sendable, Hashable {
    /// One bucket's settings.
    public struct Bucket: Sendable, Hashable {
        /// Tokens when full.
        public var size: UInt64
        /// Extra tokens spent first, once.
        public var oneTimeBurst: UInt64
        /// How long `size` tokens take to refill from empty.
        public var refillTime: Duration

        /// A bucket of `size` tokens refilled in `refillTime`, with `oneTimeBurst` extra tokens.
        public init(size: UInt64, oneTimeBurst: UInt64 = 0, refillTime: Duration) {
            self.size = size
            self.oneTimeBurst = oneTimeBurst
            self.refillTime = refillTime
        }
    }

    /// Bytes (nil: unlimited).
    public var bandwidth: Bucket?
    /// Operations (nil: unlimited).
    public var operations: Bucket?

    /// A limit on bytes, operations, or both.
    public init(bandwidth: Bucket? = nil, operations: Bucket? = nil) {
        self.bandwidth = bandwidth
        self.operations = operations
    }

    /// Parses `bw=SIZE/MS[+BURST],ops=SIZE/MS[+BURST]` (either part may be left out): for
    /// example `bw=10485760/1000` is 10 MiB a second; `ops=1000/1000+500` is 1000 operations
    /// a second with a one-time burst of 500. Parts are separated by `;` or `:` as well, so the
    /// value fits inside a comma-separated option.
    public init(parsing text: String) throws(RateLimitParseError) {
        var limit = RateLimit()
        for part in text.split(whereSeparator: { $0 == ";" || $0 == ":" }) {
            let pieces = part.split(separator: "=", maxSplits: 1).map(String.init)
            guard pieces.count == 2 else { throw RateLimitParseError(text: text, reason: "'\(part)' is not KEY=SIZE/MS[+BURST]") }
            let bucket = try Self.bucket(pieces[1], in: text)
            switch pieces[0] {
            case "bw": limit.bandwidth = bucket
            case "ops": limit.operations = bucket
            default: throw RateLimitParseError(text: text, reason: "unknown bucket '\(pieces[0])' (bw or ops)")
            }
        }
        guard limit.bandwidth != nil || limit.operations != nil else {
            throw RateLimitParseError(text: text, reason: "no bucket (bw=SIZE/MS or ops=SIZE/MS)")
        }
        self = limit
    }

    private static func bucket(_ text: String, in whole: String) throws(RateLimitParseError) -> Bucket {
        let burstSplit = text.split(separator: "+", maxSplits: 1).map(String.init)
        let rate = burstSplit[0].split(separator: "/", maxSplits: 1).map(String.init)
        guard rate.count == 2, let size = UInt64(rate[0]), size > 0, let milliseconds = UInt64(rate[1]), milliseconds > 0,
              milliseconds <= 3_600_000 else {
            throw RateLimitParseError(text: whole, reason: "'\(text)' is not SIZE/MS with both above 0 (MS at most an hour)")
        }
        var burst: UInt64 = 0
        if burstSplit.count == 2 {
            guard let parsed = UInt64(burstSplit[1]) else { throw RateLimitParseError(text: whole, reason: "burst '\(burstSplit[1])' is not a number") }
            burst = parsed
        }
        return Bucket(size: size, oneTimeBurst: burst, refillTime: .milliseconds(Int64(milliseconds)))
    }
}

/// A rate limit that could not be read.
public struct RateLimitParseError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The text given.
    public var text: String
    /// What is wrong with it.
    public var reason: String
    /// The text and the reason.
    public var description: String { "rate limit '\(text)': \(reason)" }
}

/// Firecracker's rate limiter: a bytes bucket and an operations bucket, either optional; a
/// request passes when both have its tokens, and takes them from both. A throttled caller asks
/// ``waitNanoseconds(bytes:)`` how long to wait, waits (on a timer, not by spinning), and
/// tries again; nothing is dropped. Safe to share between threads.
public final class RateLimiter: Sendable {
    /// The settings.
    public let limit: RateLimit
    /// The clock the buckets run on.
    public let clock: any RateLimiterClock
    private let buckets: Locked<(bandwidth: TokenBucket?, operations: TokenBucket?)>
    private let throttledRequests = Atomic<UInt64>(0)

    /// A limiter with both buckets full at the clock's current time.
    public init(_ limit: RateLimit, clock: any RateLimiterClock = MonotonicClock()) {
        self.limit = limit
        self.clock = clock
        let now = clock.nanoseconds()
        buckets = Locked((
            limit.bandwidth.map { TokenBucket(size: $0.size, oneTimeBurst: $0.oneTimeBurst, refillTime: $0.refillTime, now: now) },
            limit.operations.map { TokenBucket(size: $0.size, oneTimeBurst: $0.oneTimeBurst, refillTime: $0.refillTime, now: now) }
        ))
    }

    /// Times a request had to wait.
    public var throttledCount: UInt64 { throttledRequests.load(ordering: .relaxed) }

    /// Takes one operation and `bytes` if both buckets have them now; otherwise takes nothing
    /// and returns false.
    public func consume(bytes: UInt64) -> Bool {
        let now = clock.nanoseconds()
        let passed = buckets.withLock { buckets -> Bool in
            var (bandwidth, operations) = buckets
            // Check both on copies first, so a refusal by one takes nothing from the other.
            guard bandwidth?.consume(bytes, now: now) ?? true, operations?.consume(1, now: now) ?? true else { return false }
            buckets = (bandwidth, operations)
            return true
        }
        if !passed { throttledRequests.add(1, ordering: .relaxed) }
        return passed
    }

    /// Nanoseconds until a request of `bytes` would pass (0: now).
    public func waitNanoseconds(bytes: UInt64) -> UInt64 {
        let now = clock.nanoseconds()
        return buckets.withLock { buckets in
            max(buckets.bandwidth?.waitNanoseconds(for: bytes, now: now) ?? 0,
                buckets.operations?.waitNanoseconds(for: 1, now: now) ?? 0)
        }
    }
}

extension RateLimiter {
    /// Runs `work` on `loop` once the buckets should hold the tokens for one operation of
    /// `bytes` (at least a microsecond from now, so a timer never spins on rounding). `work`
    /// should try ``consume(bytes:)`` again: another consumer may have taken the tokens.
    public func whenTokensAllow(bytes: UInt64, on loop: EventLoop, _ work: @escaping @Sendable () -> Void) {
        let wait = max(waitNanoseconds(bytes: bytes), 1000)
        loop.schedule(after: .nanoseconds(Int64(clamping: wait)), work)
    }
}

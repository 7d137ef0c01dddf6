import HVCore
import Synchronization
import Testing

/// A clock a test moves by hand.
final class ManualClock: RateLimiterClock {
    let now = Atomic<UInt64>(0)
    func nanoseconds() -> UInt64 { now.load(ordering: .relaxed) }
    func advance(_ nanoseconds: UInt64) { now.add(nanoseconds, ordering: .relaxed) }
}

@Suite("RateLimiter")
struct RateLimiterTests {
    /// A request passes only when both buckets have its tokens; a refusal by one takes
    /// nothing from the other.
    @Test func bothBucketsMustAgree() {
        let clock = ManualClock()
        let limiter = RateLimiter(RateLimit(bandwidth: .init(size: 1000, refillTime: .seconds(1)),
                                            operations: .init(size: 2, refillTime: .seconds(1))), clock: clock)
        #expect(limiter.consume(bytes: 400))
        #expect(limiter.consume(bytes: 400))
        // Out of operations, though 200 bytes are left: nothing is taken.
        #expect(!limiter.consume(bytes: 100))
        #expect(limiter.waitNanoseconds(bytes: 100) == 500_000_000)
        clock.advance(500_000_000)
        // One operation back, and 700 bytes (200 + 500): 600 passes.
        #expect(limiter.consume(bytes: 600))
        #expect(!limiter.consume(bytes: 200))
        #expect(limiter.throttledCount == 2)
    }

    @Test func aLimiterWithOnlyOneBucketLimitsOnlyThat() {
        let clock = ManualClock()
        let limiter = RateLimiter(RateLimit(operations: .init(size: 1, refillTime: .milliseconds(10))), clock: clock)
        #expect(limiter.consume(bytes: 1 << 40))
        #expect(!limiter.consume(bytes: 0))
        clock.advance(10_000_000)
        #expect(limiter.consume(bytes: 0))
    }

    @Test(arguments: [
        ("bw=10485760/1000", RateLimit(bandwidth: .init(size: 10_485_760, refillTime: .seconds(1)))),
        ("ops=100/1000+50", RateLimit(operations: .init(size: 100, oneTimeBurst: 50, refillTime: .seconds(1)))),
        ("bw=4096/10;ops=8/10", RateLimit(bandwidth: .init(size: 4096, refillTime: .milliseconds(10)),
                                          operations: .init(size: 8, refillTime: .milliseconds(10)))),
        ("ops=1/1:bw=1/1", RateLimit(bandwidth: .init(size: 1, refillTime: .milliseconds(1)),
                                     operations: .init(size: 1, refillTime: .milliseconds(1)))),
    ])
    func parsesTheOptionForm(text: String, expected: RateLimit) throws {
        #expect(try RateLimit(parsing: text) == expected)
    }

    @Test(arguments: ["", "bw", "bw=", "bw=10", "bw=0/1000", "bw=10/0", "bw=10/1000+x", "iops=1/1", "bw=-1/5", "bw=1/3600001"])
    func refusesBadOptions(text: String) {
        #expect(throws: RateLimitParseError.self) { try RateLimit(parsing: text) }
    }
}

import HVCore
import Testing

/// Exact token arithmetic on an injected clock (nanoseconds passed in).
@Suite("TokenBucket")
struct TokenBucketTests {
    /// 1000 tokens a second: one token every millisecond.
    func bucket(burst: UInt64 = 0) -> TokenBucket {
        TokenBucket(size: 1000, oneTimeBurst: burst, refillTime: .seconds(1), now: 0)
    }

    @Test func startsFullAndRefusesWhenEmpty() {
        var bucket = bucket()
        let passed1 = bucket.consume(1000, now: 0)
        #expect(passed1)
        let passed2 = bucket.consume(1, now: 0)
        #expect(!passed2)
        #expect(bucket.waitNanoseconds(for: 1, now: 0) == 1_000_000)
    }

    /// Refill accrues in fractions of a token that are never lost between calls.
    @Test func refillIsExactAcrossCalls() {
        var bucket = bucket()
        let passed3 = bucket.consume(1000, now: 0)
        #expect(passed3)
        let halfToken = bucket.consume(1, now: 500_000)
        #expect(!halfToken)
        #expect(bucket.waitNanoseconds(for: 1, now: 500_000) == 500_000)
        let twoHalves = bucket.consume(1, now: 1_000_000)
        #expect(twoHalves)
        let passed4 = bucket.consume(1, now: 1_999_999)
        #expect(!passed4)
        let passed5 = bucket.consume(1, now: 2_000_000)
        #expect(passed5)
        // A long idle time refills to the size, no more.
        bucket.refill(now: 60_000_000_000)
        #expect(bucket.budget == 1000)
    }

    @Test func theOneTimeBurstIsSpentFirstAndNeverRefilled() {
        var bucket = bucket(burst: 500)
        let passed6 = bucket.consume(1500, now: 0)
        #expect(passed6)
        #expect(bucket.burstLeft == 0 && bucket.budget == 0)
        bucket.refill(now: 10_000_000_000)
        #expect(bucket.burstLeft == 0 && bucket.budget == 1000)
        // 1001 is more than the bucket: it passes from a full bucket and leaves a debt of 1.
        let passed7 = bucket.consume(1001, now: 10_000_000_000)
        #expect(passed7 && bucket.budget == -1)
    }

    /// A request larger than the bucket passes when the bucket is full and leaves a debt that
    /// costs its size in time; it never passes from a bucket that is not full.
    @Test func aRequestLargerThanTheBucketPassesWhenFullAndLeavesADebt() {
        var bucket = bucket()
        let passed8 = bucket.consume(1, now: 0)
        #expect(passed8)
        let passed9 = bucket.consume(2500, now: 0)
        #expect(!passed9)
        #expect(bucket.waitNanoseconds(for: 2500, now: 0) == 1_000_000)
        let passed10 = bucket.consume(2500, now: 1_000_000)
        #expect(passed10)
        #expect(bucket.budget == -1500)
        // 1501 tokens to go before one more: 1.501 s.
        #expect(bucket.waitNanoseconds(for: 1, now: 1_000_000) == 1_501_000_000)
        let passed11 = bucket.consume(1, now: 1_501_999_999)
        #expect(!passed11)
        let passed12 = bucket.consume(1, now: 1_502_000_000)
        #expect(passed12)
    }

    /// waitNanoseconds is exact: waiting that long passes, a nanosecond less does not.
    @Test(arguments: [1, 7, 999, 1000, 4000] as [UInt64])
    func theWaitIsExact(tokens: UInt64) {
        var bucket = TokenBucket(size: 1000, refillTime: .milliseconds(333), now: 0)
        let passed13 = bucket.consume(1000, now: 0)
        #expect(passed13)
        let wait = bucket.waitNanoseconds(for: tokens, now: 0)
        var early = bucket
        let passed14 = early.consume(tokens, now: wait - 1)
        #expect(!passed14)
        let passed15 = bucket.consume(tokens, now: wait)
        #expect(passed15)
    }

    @Test func hugeSizesAndTimesDoNotOverflow() {
        var bucket = TokenBucket(size: .max, refillTime: .seconds(Int64.max / 2), now: 0)
        let passed16 = bucket.consume(.max / 2, now: 0)
        #expect(passed16)
        bucket.refill(now: .max)
        #expect(bucket.budget == Int64.max)
        var tiny = TokenBucket(size: 1, refillTime: .zero, now: 0)
        let passed17 = tiny.consume(1, now: 0)
        #expect(passed17)
        let passed18 = tiny.consume(1, now: 1)
        #expect(passed18)
    }
}

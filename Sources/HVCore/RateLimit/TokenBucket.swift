/// A token bucket as Firecracker specifies its rate limiter's: `size` tokens that refill
/// completely in `refillTime`, plus a one-time burst of extra tokens spent first and never
/// refilled. Tokens are bytes or operations; time is nanoseconds of whatever clock the caller
/// reads, so tests can drive it exactly.
///
/// The arithmetic is exact: refill accrues in token-nanoseconds (each elapsed nanosecond adds
/// `size` of them, a token costs `refillTime` of them), so no fraction of a token is lost
/// between calls. A request larger than the bucket is let through when the bucket is full and
/// leaves it in debt, so that it costs the time its size is worth rather than never passing.
public struct TokenBucket: Sendable, Hashable {
    /// Tokens the bucket holds when full.
    public let size: UInt64
    /// Extra tokens available once, at the start, spent before the bucket's own.
    public let oneTimeBurst: UInt64
    /// Nanoseconds to refill `size` tokens from empty (at least 1).
    public let refillNanoseconds: UInt64

    /// Tokens in the bucket now (negative: a debt from a request larger than the bucket).
    public private(set) var budget: Int64
    /// What is left of the one-time burst.
    public private(set) var burstLeft: UInt64
    /// Refill accrued but less than a token, in token-nanoseconds (below `refillNanoseconds`).
    private var accrued: UInt64 = 0
    /// When the bucket was last brought up to date.
    private var lastUpdate: UInt64

    /// A full bucket at time `now`.
    /// - Parameters:
    ///   - size: tokens when full (at least 1).
    ///   - oneTimeBurst: extra tokens, spent first, never refilled.
    ///   - refillTime: how long `size` tokens take to refill from empty.
    ///   - now: the clock's reading at creation.
    public init(size: UInt64, oneTimeBurst: UInt64 = 0, refillTime: Duration, now: UInt64) {
        self.size = max(size, 1)
        self.oneTimeBurst = oneTimeBurst
        refillNanoseconds = max(1, refillTime.clampedNanoseconds)
        budget = Int64(clamping: self.size)
        burstLeft = oneTimeBurst
        lastUpdate = now
    }

    /// Brings the bucket up to `now`: the refill since the last update, capped at `size`.
    public mutating func refill(now: UInt64) {
        guard now > lastUpdate else { return }
        let full = Int64(clamping: size)
        guard budget < full else {
            lastUpdate = now
            accrued = 0
            return
        }
        // Only the time it takes to fill up counts (a debt takes longer): clamping to it keeps
        // every product below in range.
        // The difference fits in 64 bits unsigned, though not always in Int64.
        let missing = UInt64(bitPattern: full) &- UInt64(bitPattern: budget)
        let elapsed = min(now - lastUpdate, Self.ceilingDivide(Self.subtract(accrued, from: missing.multipliedFullWidth(by: refillNanoseconds)), by: size))
        lastUpdate = now
        let product = elapsed.multipliedFullWidth(by: size)
        let (low, carry) = product.low.addingReportingOverflow(accrued)
        let total = (high: product.high &+ (carry ? 1 : 0), low: low)
        // elapsed is at most the time to fill, so the quotient is at most `missing` (+ 1).
        guard total.high < refillNanoseconds else {
            budget = full
            accrued = 0
            return
        }
        let (tokens, remainder) = refillNanoseconds.dividingFullWidth(total)
        accrued = remainder
        let (sum, overflow) = budget.addingReportingOverflow(Int64(clamping: tokens))
        budget = overflow ? full : sum
        if budget >= full {
            budget = full
            accrued = 0
        }
    }

    /// `value - amount` for a 128-bit value, saturating at zero.
    private static func subtract(_ amount: UInt64, from value: (high: UInt64, low: UInt64)) -> (high: UInt64, low: UInt64) {
        let (low, borrow) = value.low.subtractingReportingOverflow(amount)
        if borrow, value.high == 0 { return (0, 0) }
        return (value.high &- (borrow ? 1 : 0), low)
    }

    /// ⌈value / divisor⌉ for a 128-bit value, saturating at UInt64.max.
    private static func ceilingDivide(_ value: (high: UInt64, low: UInt64), by divisor: UInt64) -> UInt64 {
        guard value.high < divisor else { return .max }
        let (quotient, remainder) = divisor.dividingFullWidth(value)
        return remainder == 0 ? quotient : quotient.addingReportingOverflow(1).overflow ? .max : quotient + 1
    }

    /// Takes `tokens` at `now` if they are there (burst first); a request larger than the
    /// bucket passes when the bucket is full and leaves it in debt. Returns whether it passed.
    public mutating func consume(_ tokens: UInt64, now: UInt64) -> Bool {
        refill(now: now)
        let fromBurst = min(burstLeft, tokens)
        let rest = tokens - fromBurst
        // Needed from the bucket's own tokens: all of `rest`, or a full bucket when larger.
        guard rest == 0 || budget >= Int64(clamping: min(rest, size)) else { return false }
        burstLeft -= fromBurst
        budget -= Int64(clamping: rest)
        return true
    }

    /// Nanoseconds from `now` until ``consume(_:now:)`` of `tokens` would pass (0: now).
    public func waitNanoseconds(for tokens: UInt64, now: UInt64) -> UInt64 {
        var copy = self
        copy.refill(now: now)
        let rest = tokens - min(copy.burstLeft, tokens)
        let needed = Int64(clamping: min(rest, size))
        guard rest > 0, copy.budget < needed else { return 0 }
        // Tokens missing, in token-nanoseconds, less what has accrued; rounded up to whole ns.
        let missing = UInt64(bitPattern: needed) &- UInt64(bitPattern: copy.budget)
        return Self.ceilingDivide(Self.subtract(copy.accrued, from: missing.multipliedFullWidth(by: refillNanoseconds)), by: size)
    }
}

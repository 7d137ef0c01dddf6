import HVCore

/// Counters and a latency histogram for one hypercall number, updated by the vCPU threads
/// (one uncontended lock per call) and readable at any time.
final class HypercallCounters: Sendable {
    static let bucketCount = 40

    private struct Tally {
        var calls: UInt64 = 0
        var errors: UInt64 = 0
        var totalNanoseconds: UInt64 = 0
        /// Bucket i counts calls that took [2^i, 2^(i+1)) ns (bucket 0 also holds 0 ns).
        var buckets = [UInt64](repeating: 0, count: HypercallCounters.bucketCount)
    }

    private let tally = Locked(Tally())

    func record(nanoseconds: UInt64, failed: Bool) {
        let bucket = nanoseconds == 0 ? 0 : min(Self.bucketCount - 1, 63 - nanoseconds.leadingZeroBitCount)
        tally.withLock { tally in
            tally.calls &+= 1
            if failed { tally.errors &+= 1 }
            tally.totalNanoseconds &+= nanoseconds
            tally.buckets[bucket] &+= 1
        }
    }

    var calls: UInt64 { tally.withLock { $0.calls } }

    func snapshot(number: HypercallNumber, name: String) -> HypercallStatistics {
        tally.withLock { tally in
            HypercallStatistics(number: number, name: name, calls: tally.calls, errors: tally.errors,
                                totalNanoseconds: tally.totalNanoseconds, histogram: tally.buckets)
        }
    }
}

/// How often one hypercall ran, how often it failed, and how long its handler took (host
/// time inside the dispatcher, not the exit itself).
public struct HypercallStatistics: Sendable, Hashable, CustomStringConvertible {
    /// Which hypercall.
    public let number: HypercallNumber
    /// Its name.
    public let name: String
    /// How many times it ran.
    public let calls: UInt64
    /// Calls that returned an error code.
    public let errors: UInt64
    /// Host time in its handler, all calls together.
    public let totalNanoseconds: UInt64
    /// `histogram[i]` counts calls that took from 2^i up to 2^(i+1) nanoseconds.
    public let histogram: [UInt64]

    /// Host time per call, on average.
    public var meanNanoseconds: Double { calls == 0 ? 0 : Double(totalNanoseconds) / Double(calls) }

    /// An upper bound for the `fraction` quantile (0.5 for the median), in nanoseconds: the
    /// top of the histogram bucket it falls in.
    public func quantileUpperBound(_ fraction: Double) -> UInt64 {
        guard calls > 0 else { return 0 }
        let target = UInt64((Double(calls) * min(max(fraction, 0), 1)).rounded(.up))
        var seen: UInt64 = 0
        for (bucket, count) in histogram.enumerated() {
            seen += count
            if seen >= max(target, 1) { return bucket >= 63 ? UInt64.max : (UInt64(1) << (bucket + 1)) - 1 }
        }
        return UInt64.max
    }

    /// Name, calls, errors and mean time, in one line.
    public var description: String {
        "\(name) (\(number.rawValue)): \(calls) calls, \(errors) errors, mean \(Int(meanNanoseconds)) ns, p99 < \(quantileUpperBound(0.99)) ns"
    }
}

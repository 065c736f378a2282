// The statistics `moe-dist compare`, `moe-dist gate` and the notebooks (notebooks/moe_analysis.py,
// `spread_summary`) compute from a run's history, by one definition (docs/statistics.md):
//
//   quantile q of n values x_(0) <= ... <= x_(n-1): linear interpolation at position q·(n − 1)
//       (numpy's and pandas' default), so the median of an even count is the mean of the middle two;
//   tokens/s of a run: the median of its logged /train/tokens_per_sec values (each one log
//       interval: tokens of the interval / summed step time), with the interquartile range
//       q75 − q25 as its spread; the median, unlike the mean, is not moved by one slow interval
//       (an evaluation's cache effects, another job on the machine).

/// Median and quartiles of a sample.
public struct SpreadSummary: Equatable, Sendable, Codable {
    public var count: Int
    public var median: Double
    public var q25: Double
    public var q75: Double

    /// nil for an empty sample. Non-finite values are left out.
    public init?(_ values: [Double]) {
        let v = values.filter(\.isFinite).sorted()
        guard !v.isEmpty else { return nil }
        func quantile(_ q: Double) -> Double {
            let pos = q * Double(v.count - 1), lo = Int(pos.rounded(.down)), hi = min(lo + 1, v.count - 1)
            return v[lo] + (v[hi] - v[lo]) * (pos - Double(lo))
        }
        count = v.count; median = quantile(0.5); q25 = quantile(0.25); q75 = quantile(0.75)
    }

    /// Interquartile range as a fraction of the median.
    public var relativeSpread: Double { median > 0 ? (q75 - q25) / median : .infinity }
}

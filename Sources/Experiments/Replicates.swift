// Replicates: runs of one ablation arm that differ only in their seeds, and the statistics that say
// whether a difference between arms is larger than seed noise.
//
//   arm        runs whose configurations are equal apart from `name`, `train.seed` and `train.data_seed`
//   summary    n, mean, sample standard deviation s (n − 1 in the denominator; 0 for n = 1),
//              standard error s/√n
//   difference mean_a − mean_b with standard error √(s_p²/n_a + s_p²/n_b), where s_p² is the pooled
//              variance Σ(n_i − 1)s_i² / Σ(n_i − 1) over both arms (so an arm with one run borrows the
//              other arm's spread); unknown (nil) when neither arm has two runs
import Foundation
import Configuration

/// n, mean, sample standard deviation and standard error of a set of replicate values.
public struct ReplicateSummary: Codable, Equatable, Sendable {
    public var n: Int
    public var mean: Double
    /// Sample standard deviation (n − 1); 0 for a single value.
    public var sd: Double
    /// sd / √n.
    public var se: Double

    public init(_ values: [Double]) {
        let n = values.count
        let mean = n > 0 ? values.reduce(0, +) / Double(n) : .nan
        let ss = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) }
        let sd = n > 1 ? (ss / Double(n - 1)).squareRoot() : 0
        self.n = n; self.mean = mean; self.sd = sd
        se = n > 0 ? sd / Double(n).squareRoot() : .nan
    }
}

/// The difference of two arms' means and its standard error (nil when neither arm has replicates).
public struct ReplicateDifference: Codable, Equatable, Sendable {
    public var difference: Double
    public var standardError: Double?
    /// The pooled standard deviation used, and the degrees of freedom behind it.
    public var pooledSD: Double?
    public var degreesOfFreedom: Int

    /// `a.mean − b.mean`.
    public init(_ a: ReplicateSummary, _ b: ReplicateSummary) {
        difference = a.mean - b.mean
        degreesOfFreedom = max(0, a.n - 1) + max(0, b.n - 1)
        if degreesOfFreedom > 0 {
            let pooledVariance = (Double(max(0, a.n - 1)) * a.sd * a.sd + Double(max(0, b.n - 1)) * b.sd * b.sd)
                / Double(degreesOfFreedom)
            pooledSD = pooledVariance.squareRoot()
            standardError = (pooledVariance / Double(a.n) + pooledVariance / Double(b.n)).squareRoot()
        } else {
            pooledSD = nil
            standardError = nil
        }
    }
}

public enum Replicates {
    /// The configuration with the keys replicates may differ in set to fixed values: runs with equal
    /// keys belong to one arm.
    public static func armKey(_ c: RunConfig) -> String {
        var c = c
        c.name = ""
        c.train.seed = 0
        c.train.dataSeed = nil
        return c.toJSON()
    }

    /// Groups items into arms (order of first appearance, items in their order).
    public static func arms<T>(_ items: [T], config: (T) -> RunConfig) -> [[T]] {
        var order: [String] = []
        var groups: [String: [T]] = [:]
        for item in items {
            let k = armKey(config(item))
            if groups[k] == nil { order.append(k) }
            groups[k, default: []].append(item)
        }
        return order.map { groups[$0]! }
    }

    /// An arm's name: the common name of its runs without the `-s<seed>` suffix of `sweep --seeds`.
    public static func armName(_ names: [String]) -> String {
        let stems = names.map(stem)
        return Set(stems).count == 1 ? stems[0] : stems.sorted().first ?? ""
    }

    /// `p1-aux0.01-s1235` -> `p1-aux0.01`.
    public static func stem(_ name: String) -> String {
        guard let r = name.range(of: "-s", options: .backwards),
              !name[r.upperBound...].isEmpty, name[r.upperBound...].allSatisfy(\.isNumber) else { return name }
        return String(name[..<r.lowerBound])
    }
}

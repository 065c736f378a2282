// Where each token of one forward pass went: for every recurrent iteration and token, the chosen experts
// and their gates (descending, SPEC section 3), whether each assignment was dropped by the capacity
// rule, and the entropy of the router's probabilities P. Filled by InferenceModel.run(trace:).
import Foundation

public final class RoutingTrace {
    public private(set) var tokens = 0, iterations = 0, k = 0
    /// [R, n, k] expert ids, gates, and 1 when the assignment was dropped.
    public private(set) var experts: [Int32] = []
    public private(set) var gates: [Float] = []
    public private(set) var dropped: [UInt8] = []
    /// [R, n] −Σ_e P_e ln P_e (nats) of each token's router probabilities; ln E means uniform.
    public private(set) var entropy: [Float] = []

    public init() {}

    func begin(tokens n: Int, iterations R: Int, k: Int) {
        tokens = n; iterations = R; self.k = k
        experts = [Int32](repeating: 0, count: R * n * k)
        gates = [Float](repeating: 0, count: R * n * k)
        dropped = [UInt8](repeating: 0, count: R * n * k)
        entropy = [Float](repeating: 0, count: R * n)
    }

    func record(iteration r: Int, experts idx: UnsafePointer<Int32>, gates g: UnsafePointer<Float>,
                kept: UnsafePointer<Int32>, probs: UnsafePointer<Float>, n: Int, E: Int) {
        let base = r * n * k
        for i in 0 ..< n * k {
            experts[base + i] = idx[i]; gates[base + i] = g[i]; dropped[base + i] = kept[i] == 0 ? 1 : 0
        }
        for t in 0 ..< n {
            var h = 0.0
            for e in 0 ..< E { let p = Double(probs[t * E + e]); if p > 0 { h -= p * Foundation.log(p) } }
            entropy[r * n + t] = Float(h)
        }
    }

    /// Mean over tokens of |K_r ∩ K_{r+1}| / k for r = 0 ..< R−1 (the metrics history's /experts/agreement,
    /// before drops).
    public func agreement() -> [Double] {
        guard iterations > 1, tokens > 0 else { return [] }
        return (0 ..< iterations - 1).map { r in
            var sum = 0
            for t in 0 ..< tokens {
                let a = experts[(r * tokens + t) * k ..< (r * tokens + t + 1) * k]
                let b = experts[((r + 1) * tokens + t) * k ..< ((r + 1) * tokens + t + 1) * k]
                sum += a.filter { b.contains($0) }.count
            }
            return Double(sum) / Double(tokens * k)
        }
    }
}

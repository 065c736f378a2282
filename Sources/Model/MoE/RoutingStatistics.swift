// What the router knows about the global micro-batch: the sums one all-reduce collects
// (GlobalRoutingSums) and the per-use summary the trainer reports (RoutingStats); the losses computed
// from them are in RouterMath.swift.
import Collectives

/// Routing statistics of one MoE use over the global micro-batch (identical on every rank).
public struct RoutingStats: Sendable {
    /// Tokens N of the global micro-batch.
    public var tokens: Int = 0
    /// [E] assignments per expert, before drops (all slots).
    public var counts: [Int64] = []
    /// Assignments dropped by the capacity limit.
    public var dropped: Int64 = 0
    /// [E] Σ over tokens of P[t, e].
    public var probSum: [Double] = []
    /// Switch load-balancing loss E · Σ_e f_e · Pbar_e.
    public var aux: Double = 0
    /// Router z-loss: mean over tokens of logsumexp(z)².
    public var z: Double = 0
    /// Σ over the tokens of |K_prev ∩ K| / k against the previous iteration's top-k sets (shared pool, r > 0).
    public var agreementSum: Double? = nil

    init(experts E: Int) {
        counts = [Int64](repeating: 0, count: E)
        probSum = [Double](repeating: 0, count: E)
    }
    public init() {}
}

/// The sums over the global micro-batch that the router's losses and the capacity limit need. Every rank
/// adds its own tokens, then one all-reduce over the world makes them global (communicates). Stored flat,
/// in the order of that all-reduce: [Σ_t P[t,e] (E) | Σ_t lse[t]² | N | assignments per (slot j, expert e) (k·E) |
/// Σ of the per-sequence aux terms (sequence scope) | Σ of the agreement with the previous iteration].
struct GlobalRoutingSums {
    let experts: Int, slots: Int
    private(set) var values: [Double]

    init(experts E: Int, slots k: Int) {
        experts = E; slots = k
        values = [Double](repeating: 0, count: E + 4 + k * E)
    }

    /// Σ_t P[t, e].
    func probSum(_ e: Int) -> Double { values[e] }
    /// Σ_t lse[t]².
    var lseSquaredSum: Double { values[experts] }
    /// Tokens N.
    var tokens: Int { Int(values[experts + 1]) }
    /// Σ over sequences of E·Σ_e f_e·Pbar_e (moe.aux_scope = sequence); set after `setLocal`.
    var sequenceAuxSum: Double {
        get { values[experts + 2 + slots * experts] }
        set { values[experts + 2 + slots * experts] = newValue }
    }
    /// Σ over tokens of |K_prev ∩ K| / k; set after `setLocal`.
    var agreementSum: Double {
        get { values[experts + 3 + slots * experts] }
        set { values[experts + 3 + slots * experts] = newValue }
    }
    /// Assignments to expert e in slot j (before drops).
    func slotCount(_ j: Int, _ e: Int) -> Int { Int(values[experts + 2 + j * experts + e]) }
    /// Assignments to expert e over all slots (before drops).
    func assignments(_ e: Int) -> Int {
        var n = 0
        for j in 0 ..< slots { n += slotCount(j, e) }
        return n
    }

    /// Resets to this rank's N tokens: probs [N,E], lse [N], selected [N,k] (local, no communication).
    mutating func setLocal(probs: UnsafePointer<Float>, lse: UnsafePointer<Float>, selected: UnsafePointer<Int32>, N: Int) {
        let E = experts, k = slots
        values.withUnsafeMutableBufferPointer { g in
            g.update(repeating: 0)
            for t in 0 ..< N {
                let p = probs + t * E
                for e in 0 ..< E { g[e] += Double(p[e]) }
                g[E] += Double(lse[t]) * Double(lse[t])
                for j in 0 ..< k { g[E + 2 + j * E + Int(selected[t * k + j])] += 1 }
            }
            g[E + 1] = Double(N)
        }
    }

    /// Sums every rank's values (communicates: one all-reduce over `world`).
    mutating func allReduce(_ world: Communicator) {
        values.withUnsafeMutableBufferPointer { world.allReduceSum($0) }
    }
}

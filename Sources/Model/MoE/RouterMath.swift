// The router's pure math (Megatron keeps the same in moe_utils), for every routing variant of SPEC
// section 3 ("Routing variants"): softmax or sigmoid scores, an optional per-expert selection bias
// (auxiliary-loss-free balancing), the one load-balancing (aux) loss over the micro-batch or per sequence,
// the z-loss and their gradient; plus the bias update rule and the per-token agreement of two iterations'
// expert choices. Router.swift drives these with the global statistics; InferenceModel scores with them.
//
//   softmax  S = P = softmax(z)
//   sigmoid  S = σ(z), P = S / Σ_e S_e (P is what the aux loss sees)
//   select   experts e_0..e_{k-1} = top-k of S + b (ties to the lower index, descending),
//            gates g_j = S[e_j], divided by Σ_j S[e_j] when `normalize` and k > 1
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

enum RouterScore: String, Sendable { case softmax, sigmoid }

/// scores[N,E] = S, probs[N,E] = P (the same values for softmax), lse[N] = logsumexp(z) (for the z-loss),
/// topIndex[N,k] and gates[N,k] as in the header; `bias` [E] shifts selection only.
func routerScoreForward(_ scores: UnsafeMutablePointer<Float>, _ probs: UnsafeMutablePointer<Float>,
                               _ lse: UnsafeMutablePointer<Float>, _ topIndex: UnsafeMutablePointer<Int32>,
                               _ gates: UnsafeMutablePointer<Float>, _ logits: UnsafePointer<Float>,
                               bias: UnsafePointer<Float>?, _ N: Int, _ E: Int, _ k: Int,
                               score: RouterScore, normalize: Bool) {
    // logits, scores, probs are (N,E); lse (N); topIndex, gates (N,k); bias (E)
    precondition(E > 0 && k >= 1 && k <= E, "router: need 1 <= k (\(k)) <= E (\(E))")
    for t in 0 ..< N {
        let z = logits + t * E, s = scores + t * E, p = probs + t * E
        var m = -Float.infinity
        for e in 0 ..< E { m = max(m, z[e]) }
        var sum: Float = 0
        for e in 0 ..< E { let x = exp(z[e] - m); p[e] = x; sum += x }
        lse[t] = m + log(sum)
        switch score {
        case .softmax:
            let inv = 1 / sum
            for e in 0 ..< E { p[e] *= inv; s[e] = p[e] }
        case .sigmoid:
            var total: Float = 0
            for e in 0 ..< E { s[e] = 1 / (1 + exp(-z[e])); total += s[e] }
            let inv = 1 / total
            for e in 0 ..< E { p[e] = s[e] * inv }
        }
        selectTopK(topIndex + t * k, gates + t * k, s, bias, E, k, normalize: normalize)
    }
}

/// One token's top-k of `s + bias` (descending, ties to the lower index), gates from `s`.
@inline(__always)
func selectTopK(_ idx: UnsafeMutablePointer<Int32>, _ g: UnsafeMutablePointer<Float>, _ s: UnsafePointer<Float>,
                _ bias: UnsafePointer<Float>?, _ E: Int, _ k: Int, normalize: Bool) {
    var chosenSum: Float = 0
    for j in 0 ..< k {
        var best = -1
        var bestKey = -Float.infinity
        for e in 0 ..< E {
            let key = s[e] + (bias?[e] ?? 0)
            guard best < 0 || key > bestKey else { continue }   // strict '>' keeps the lower index on ties
            var taken = false
            for i in 0 ..< j where Int(idx[i]) == e { taken = true; break }
            if !taken { best = e; bestKey = key }
        }
        idx[j] = Int32(best)
        g[j] = s[best]
        chosenSum += s[best]
    }
    if normalize && k > 1 {
        let inv = 1 / chosenSum
        for j in 0 ..< k { g[j] *= inv }
    }
}

/// Writes (overwrites, unlike the `...Backward` kernels, which add) dlogits[N,E] = dL/dz for one router use. Inputs: dgates[N,k] (0 for dropped
/// assignments), the forward's scores, probs, lse and topIndex; `auxGrad` is dL/dP: `auxRows` rows of
/// [E], token t using row t / `tokensPerAuxRow` (one row for the micro-batch scope, one per sequence for the
/// sequence scope); `zGrad` weighs Σ_t lse[t]².
func routerLogitsGradient(_ dlogits: UnsafeMutablePointer<Float>, _ dgates: UnsafePointer<Float>,
                          _ scores: UnsafePointer<Float>, _ probs: UnsafePointer<Float>, _ lse: UnsafePointer<Float>,
                          _ logits: UnsafePointer<Float>, _ topIndex: UnsafePointer<Int32>,
                          _ N: Int, _ E: Int, _ k: Int, score: RouterScore, normalize: Bool,
                          auxGrad: UnsafePointer<Float>?, tokensPerAuxRow: Int, zGrad: Float) {
    for t in 0 ..< N {
        let s = scores + t * E, p = probs + t * E, z = logits + t * E
        let dz = dlogits + t * E
        let idx = topIndex + t * k, dg = dgates + t * k
        // dS from the gates (stored in dz for now).
        for e in 0 ..< E { dz[e] = 0 }
        if normalize && k > 1 {
            var S: Float = 0
            for j in 0 ..< k { S += s[Int(idx[j])] }
            let invS = 1 / S
            var dgDotG: Float = 0
            for j in 0 ..< k { dgDotG += dg[j] * s[Int(idx[j])] * invS }
            for j in 0 ..< k { dz[Int(idx[j])] += (dg[j] - dgDotG) * invS }
        } else {
            for j in 0 ..< k { dz[Int(idx[j])] += dg[j] }
        }
        let aux = auxGrad.map { $0 + (t / max(1, tokensPerAuxRow)) * E }
        let zTerm = zGrad * 2 * lse[t]
        switch score {
        case .softmax:   // S = P: dP = dS + aux; dz = P ⊙ (dP − Σ P·dP); z-loss through the same softmax
            var dot: Float = 0
            for e in 0 ..< E { dz[e] += aux?[e] ?? 0; dot += p[e] * dz[e] }
            for e in 0 ..< E { dz[e] = p[e] * (dz[e] - dot + zTerm) }
        case .sigmoid:   // P = S/ΣS: dS += (dP − Σ P·dP)/ΣS; dz = dS ⊙ S(1 − S); z-loss via softmax(z)
            if let aux {
                var total: Float = 0, dot: Float = 0
                for e in 0 ..< E { total += s[e]; dot += p[e] * aux[e] }
                for e in 0 ..< E { dz[e] += (aux[e] - dot) / total }
            }
            for e in 0 ..< E {
                dz[e] = dz[e] * s[e] * (1 - s[e]) + zTerm * exp(z[e] - lse[t])
            }
        }
    }
}

/// The Switch load-balancing loss (Fedus et al. 2021), the one aux loss of every scope, over `rows` groups of
/// `tokensPerRow` tokens (N) with k assignments each:
///   row r:  E · Σ_e f_e · Pbar_e,   f_e = counts[r,e] / (k·N),   Pbar_e = probSum[r,e] / N,
/// where counts[r,e] are the row's assignments to expert e before drops and probSum[r,e] = Σ_t P[t,e]. Returns
/// Σ_rows / `groups`: one row and one group for the micro-batch scope; for the sequence scope one row per
/// sequence, `groups` = the sequences of the global micro-batch (a rank's rows are part of them; the ranks'
/// results add up to the loss). Equals 1 for a perfectly uniform router, 0 for N = 0. With f_e held constant,
/// dL/dP[t,e] = scale · E · f_e / (N · groups) for every token of row r; written to `dProb` [rows,E] when given.
func loadBalancingLoss(counts: UnsafePointer<Int64>, probSum: UnsafePointer<Double>, rows: Int = 1, groups: Int = 1,
                       tokensPerRow N: Int, topK k: Int, experts E: Int, scale: Double = 0,
                       dProb: UnsafeMutablePointer<Float>? = nil) -> Double {
    let invN = N > 0 ? 1 / Double(N) : 0
    var total = 0.0
    for r in 0 ..< rows {
        var sum = 0.0
        for e in 0 ..< E {
            let f = Double(counts[r * E + e]) * invN / Double(k)
            sum += f * probSum[r * E + e] * invN
            dProb?[r * E + e] = Float(scale * Double(E) * f * invN / Double(groups))
        }
        total += Double(E) * sum
    }
    return groups > 0 ? total / Double(groups) : 0
}

/// Auxiliary-loss-free balancing (SPEC section 3): b_e += rate · sign(mean(c) − c_e), sign(0) = 0, from the
/// assignments c [E] of the whole optimizer step to this router's experts.
func stepSelectionBias(_ bias: UnsafeMutablePointer<Float>, counts: UnsafePointer<Int64>, _ E: Int, rate: Float) {
    var total: Int64 = 0
    for e in 0 ..< E { total += counts[e] }
    // Compare E·c_e with Σc in integers: sign(mean − c_e) without rounding.
    for e in 0 ..< E {
        let diff = total - Int64(E) * counts[e]
        bias[e] += diff > 0 ? rate : diff < 0 ? -rate : 0
    }
}

/// Σ over tokens of |K_a ∩ K_b| / k: how much two iterations' top-k sets (topA, topB [N,k]) agree.
/// Divide by N for the mean (SPEC section 7, /experts/agreement).
func routingAgreementSum(_ topA: UnsafePointer<Int32>, _ topB: UnsafePointer<Int32>, _ N: Int, _ k: Int) -> Double {
    var sum = 0
    for t in 0 ..< N {
        for i in 0 ..< k {
            let e = topA[t * k + i]
            for j in 0 ..< k where topB[t * k + j] == e { sum += 1; break }
        }
    }
    return Double(sum) / Double(k)
}

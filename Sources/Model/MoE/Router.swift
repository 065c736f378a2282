// The router of an MoE layer (SPEC section 3, MoE FFN and losses), everything that decides where a
// token goes and what that decision costs in the loss:
//
//   scores      z = u·W_router [N,E]; S = P = softmax(z), or S = σ(z), P = S/ΣS (moe.router_score);
//               lse = logsumexp(z)                                                                   local
//   selection   the k experts of largest S + b per token (b: the selection bias of
//               moe.router_bias_rate > 0, else 0; ties to the lower index)                           local
//   gates       g_j = S[e_j], divided by Σ_j S[e_j] when normalising and k > 1                      local
//   statistics  Σ_t P, Σ_t lse², N, per-slot expert counts, the per-sequence aux terms and the
//               agreement with the previous iteration's choices, over the global micro-batch   communicates
//   losses      aux = E·Σ_e f_e·Pbar_e over the micro-batch, or its mean over sequences
//               (moe.aux_scope); z = mean_t lse²                                                     local
//   capacity    keep mask: each expert keeps its first C assignments (slot, global token)   communicates
//
// Backward: the gates' gradient (from the combine) plus the aux and z terms -> router logits -> du and
// dW_router. The aux and z terms enter through constants computed from the global statistics, so each
// rank differentiates only its own tokens and the sum over ranks is the gradient of the global loss.
//
// Which router weight and bias an iteration uses (moe.routers) is the caller's choice (RouterUse).
import Kernels
import Configuration
import Collectives

/// What one forward use of the router saves for its backward and for the dispatcher; sizes for N local tokens.
final class RouterState {
    let logits = FloatBuffer()      // [N,E] u·W_router
    let scores = FloatBuffer()      // [N,E] S: what selects and gates (softmax(logits) or σ(logits))
    let probs = FloatBuffer()       // [N,E] P: what the aux loss sees (S itself for softmax, S/ΣS for sigmoid)
    let lse = FloatBuffer()         // [N] logsumexp(logits)
    let selected = Buffer<Int32>()  // [N,k] expert of assignment t·k+j
    let gates = FloatBuffer()       // [N,k] gate of assignment t·k+j
    let keep = Buffer<Int32>()      // [N,k] 1 when assignment t·k+j is kept, 0 when the capacity limit drops it
    /// Over the global micro-batch.
    var stats: RoutingStats
    let auxGrad = FloatBuffer()     // [rows,E] dL/dP[t,e] of the aux term: one row (micro-batch) or one per sequence
    /// Weight of Σ_t lse[t]² in the loss: zScale / N.
    var zGrad: Float = 0

    init(experts E: Int) { stats = RoutingStats(experts: E) }

    /// Bytes per use of the buffers (buffer table, see MicroBatchShape; the O(E) statistics arrays are left out).
    static func bufferBytes(_ s: MicroBatchShape) -> Int {
        4 * (3 * s.N * s.E + s.N + 3 * s.N * s.k + auxRows(s.auxScope, B: s.B) * s.E)
    }
    static func auxRows(_ scope: AuxScope, B: Int) -> Int { scope == .sequence ? B : 1 }
}

/// The router weights, selection bias and context one iteration routes with (moe.routers, moe.router_bias_rate).
struct RouterUse {
    let weight: UnsafePointer<Float>                   // [d,E]
    let weightGrad: UnsafeMutablePointer<Float>        // [d,E]
    let bias: UnsafePointer<Float>?                    // [E] selection bias, or nil
    /// The previous iteration's selection [N,k] over the same pool (for /experts/agreement), or nil.
    let previousSelection: UnsafePointer<Int32>?
    /// Tokens per sequence (the groups of moe.aux_scope = sequence).
    let T: Int
}

final class Router {
    let E: Int, k: Int, d: Int
    let normalizeGates: Bool
    let scoreKind: RouterScore
    let auxScope: AuxScope
    let ctx: ParallelContext
    private var sums: GlobalRoutingSums
    // Scratch (one use at a time).
    private let freshSelection = Buffer<Int32>()            // [N,k] replayed passes: the decision not taken
    private let perRankSlotCounts = Buffer<Int64>()         // [W,k,E]
    private let slotCounts = Buffer<Int>(), slotCountsBefore = Buffer<Int>(), cursor = Buffer<Int>()  // [k,E] each
    private let dlogits = FloatBuffer()                     // [N,E]
    private let sequenceCounts = Buffer<Int64>(), sequenceProbSums = Buffer<Double>()   // [B,E] sequence scope

    /// Bytes of the router's scratch buffers (buffer table, see MicroBatchShape): dlogits, the per-rank and
    /// global slot counts (Int64 and Int, 8 bytes), cursor.
    static func scratchBytes(_ s: MicroBatchShape) -> Int {
        4 * s.N * s.E + 8 * (s.W * s.k * s.E + 3 * s.k * s.E) + (s.auxScope == .sequence ? 16 * s.B * s.E : 0)
    }

    init(cfg: MoELayerConfig, dModel: Int, ctx: ParallelContext) {
        E = cfg.numExperts; k = cfg.topK; d = dModel; normalizeGates = cfg.normalizeGates; self.ctx = ctx
        scoreKind = cfg.routerScore == .sigmoid ? .sigmoid : .softmax
        auxScope = cfg.auxScope
        sums = GlobalRoutingSums(experts: E, slots: k)
        perRankSlotCounts.ensure(ctx.world.size * k * E)
        for b in [slotCounts, slotCountsBefore, cursor] { b.ensure(k * E) }
    }

    /// Routes this rank's tokens u[N,d] with router weights w [d,E] into `s` (collective: every rank calls it).
    /// `capacityFactor` 0 = dropless; `auxScale`, `zScale`: the loss weights of this use's aux and z terms.
    /// `replay`: keep `s`'s previous selection, keep mask and counts (f_e) instead of deciding anew; the gates
    /// still follow the new probabilities, so the loss is smooth in the parameters (finite-difference checks).
    func forward(_ s: RouterState, input u: UnsafePointer<Float>, use: RouterUse, N: Int,
                 capacityFactor: Double, auxScale: Double, zScale: Double, replay: Bool) {
        score(s, u, use, N: N, replay: replay)
        sums.setLocal(probs: s.probs.pointer, lse: s.lse.pointer, selected: s.selected.pointer, N: N)
        if auxScope == .sequence { sums.sequenceAuxSum = localSequenceAux(s, N: N, T: use.T, scale: nil) }
        if let previous = use.previousSelection {
            sums.agreementSum = routingAgreementSum(previous, s.selected.pointer, N, k)
        }
        ctx.timer.collective(.allReduce, over: ctx.world) { sums.allReduce(ctx.world) }
        computeLosses(s, auxScale: auxScale, zScale: zScale, replay: replay, T: use.T, N: N)
        s.stats.agreementSum = use.previousSelection == nil ? nil : sums.agreementSum
        let keep = s.keep.ensure(N * k)
        if replay { return }                             // the previous keep mask and drop count stay
        if capacityFactor > 0 {
            s.stats.dropped = Int64(applyCapacity(keep, s.selected.pointer, N: N, factor: capacityFactor))
        } else {
            keep.update(repeating: 1, count: N * k)
            s.stats.dropped = 0
        }
    }

    /// Scores, selection and gates (local).
    private func score(_ s: RouterState, _ u: UnsafePointer<Float>, _ use: RouterUse, N: Int, replay: Bool) {
        let logits = s.logits.ensure(N * E), scores = s.scores.ensure(N * E), probs = s.probs.ensure(N * E)
        let lse = s.lse.ensure(N), selected = s.selected.ensure(N * k), gates = s.gates.ensure(N * k)
        guard N > 0 else { return }
        matmulForward(logits, u, use.weight, N, d, E, workers: ctx.blasWorkers)
        let target = replay ? freshSelection.ensure(N * k) : selected
        routerScoreForward(scores, probs, lse, target, gates, logits, bias: use.bias, N, E, k, score: scoreKind,
                           normalize: normalizeGates)
        if replay { replayGates(gates, scores: scores, selected: selected, N: N) }
    }

    /// Gates of given selections: S[e_j], divided by Σ_j S[e_j] when normalising and k > 1.
    private func replayGates(_ gates: UnsafeMutablePointer<Float>, scores: UnsafePointer<Float>,
                             selected: UnsafePointer<Int32>, N: Int) {
        for t in 0 ..< N {
            var sum: Float = 0
            for j in 0 ..< k { gates[t * k + j] = scores[t * E + Int(selected[t * k + j])]; sum += gates[t * k + j] }
            if normalizeGates && k > 1 { for j in 0 ..< k { gates[t * k + j] /= sum } }
        }
    }

    /// Sequence scope: this rank's sequences' assignment counts and probability sums ([B,E], B = N/T), and
    /// Σ over them of E·Σ_e f_e·Pbar_e; with `scale` (after the all-reduce: the loss weight and the global
    /// number of sequences), also the aux gradient rows. Local.
    @discardableResult
    private func localSequenceAux(_ s: RouterState, N: Int, T: Int, scale: (coef: Double, groups: Int)?) -> Double {
        let B = T > 0 ? N / T : 0
        let counts = sequenceCounts.zeroed(B * E), probSum = sequenceProbSums.zeroed(B * E)
        let selected = s.selected.pointer, probs = s.probs.pointer
        for t in 0 ..< B * T {
            let row = (t / T) * E
            for j in 0 ..< k { counts[row + Int(selected[t * k + j])] += 1 }
            for e in 0 ..< E { probSum[row + e] += Double(probs[t * E + e]) }
        }
        let grad = scale == nil ? nil : s.auxGrad.ensure(B * E)
        return loadBalancingLoss(counts: counts, probSum: probSum, rows: B, groups: scale?.groups ?? 1, tokensPerRow: T,
                                 topK: k, experts: E, scale: scale?.coef ?? 0, dProb: grad)
    }

    /// The global statistics of `s` and its aux and z terms with their gradient constants (local).
    private func computeLosses(_ s: RouterState, auxScale: Double, zScale: Double, replay: Bool, T: Int, N localN: Int) {
        let N = sums.tokens
        s.stats.tokens = N
        for e in 0 ..< E {
            s.stats.probSum[e] = sums.probSum(e)
            if !replay { s.stats.counts[e] = Int64(sums.assignments(e)) }
        }
        if auxScope == .sequence {
            let groups = T > 0 ? N / T : 0
            s.stats.aux = groups > 0 ? sums.sequenceAuxSum / Double(groups) : 0
            localSequenceAux(s, N: localN, T: T, scale: (auxScale, groups))
        } else {
            let auxGrad = s.auxGrad.ensure(E)
            s.stats.aux = s.stats.counts.withUnsafeBufferPointer { c in
                s.stats.probSum.withUnsafeBufferPointer { p in
                    loadBalancingLoss(counts: c.baseAddress!, probSum: p.baseAddress!, tokensPerRow: N, topK: k, experts: E,
                                      scale: auxScale, dProb: auxGrad)
                }
            }
        }
        let invN = N > 0 ? 1 / Double(N) : 0
        s.stats.z = sums.lseSquaredSum * invN
        s.zGrad = Float(zScale * invN)
    }

    /// Fills `keep` for capacity factor `factor` > 0; returns the global drop count (communicates: the
    /// per-rank slot counts, by one all-reduce of a [W,k,E] buffer with only this rank's row filled).
    private func applyCapacity(_ keep: UnsafeMutablePointer<Int32>, _ selected: UnsafePointer<Int32>, N: Int,
                               factor: Double) -> Int {
        let W = ctx.world.size, me = ctx.world.rank, kE = k * E
        let perRank = perRankSlotCounts.zeroed(W * kE)
        let global = slotCounts.pointer, before = slotCountsBefore.zeroed(kE)
        for j in 0 ..< k {
            for e in 0 ..< E { global[j * E + e] = sums.slotCount(j, e) }
        }
        for t in 0 ..< N { for j in 0 ..< k { perRank[me * kE + j * E + Int(selected[t * k + j])] += 1 } }
        ctx.timer.collective(.allReduce, over: ctx.world) {
            ctx.world.allReduceSum(UnsafeMutableBufferPointer(start: perRank, count: W * kE))
        }
        for r in 0 ..< me { for i in 0 ..< kE { before[i] += Int(perRank[r * kE + i]) } }
        let C = expertCapacity(factor: factor, tokens: sums.tokens, topK: k, experts: E)
        return capacityKeepMask(keep, selected: selected, N: N, k: k, E: E, capacity: C, slotCounts: global,
                                slotCountsBefore: before, cursor: cursor.pointer)
    }

    /// du[N,d] += and dW[d,E] += the router's share of the gradient, from dgates [N,k] (the combine's
    /// gradient wrt the gates, 0 for dropped assignments) and the aux and z terms saved in `s`.
    func backward(_ s: RouterState, dInput du: UnsafeMutablePointer<Float>, dGates dgates: UnsafePointer<Float>,
                  input u: UnsafePointer<Float>, use: RouterUse, N: Int) {
        guard N > 0 else { return }
        let dz = dlogits.ensure(N * E)
        routerLogitsGradient(dz, dgates, s.scores.pointer, s.probs.pointer, s.lse.pointer, s.logits.pointer,
                             s.selected.pointer, N, E, k, score: scoreKind, normalize: normalizeGates,
                             auxGrad: s.auxGrad.pointer, tokensPerAuxRow: auxScope == .sequence ? use.T : N, zGrad: s.zGrad)
        matmulBackward(du, use.weightGrad, dz, u, use.weight, N, d, E, workers: ctx.blasWorkers)
    }
}

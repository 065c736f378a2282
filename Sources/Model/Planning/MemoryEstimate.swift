// Analytic memory of one rank during training, from the configuration alone, counted the way
// RecurrentMoEModel, MoELayer and the ParameterStore actually allocate (float32 = 4 bytes):
//
//   parameters   P_rank = trunk + ceil(E/G)·(2 or 3)·d·F per pool          (trunk replicated, experts sliced)
//   gradients    P_rank            moments   2·P_rank                        (AdamW m and v)
//   activations  saved forward state of one micro-batch of N = micro_batch·T local tokens:
//                per iteration  8·N·d (hIn, a1, q, k, v, att, hMid, u) + 2·N (rstd) + B·H·T² (probs)
//                             + MoE: 2·N·E + N (logits, probs, lse) + 4·N·k (top, gates, kept, row ids)
//                                    + N·k·d (returned rows) + X·d + X·F·(2, or 3 with swiglu) (expert x, h1, act, h3)
//                  (dense FFN: N·F·(2 or 3))
//                once  N·d (h) + N·d + N (final norm) + N·V (logits, reused as dlogits) + N (losses)
//   scratch      6·N·d (dh, dtmp, dq, dk, dv, dtmp2) + T² + N·k·d (send rows) + X·d (staging)
//                + 2·X·d (expert outputs, dy) + X·F·(2 or 3) (dact, dh1, dh3) + N·k + N·E
//
// X = rows an expert-parallel rank receives per use = N·k with balanced routing (each of the G ranks of
// an expert group sends N·k rows spread over all E experts and holds E/G of them). Buffers grow by 1.5x
// when a later step needs more rows (`Buffer.ensure`), which the estimate does not include.
import Configuration

public struct MemoryEstimate: Sendable, Codable {
    /// Parameters held by the rank (trunk + its expert slice), elements.
    public var parameters: Int
    public var parameterBytes: Int
    public var gradientBytes: Int
    /// AdamW first and second moments.
    public var optimizerBytes: Int
    /// Saved forward state of one micro-batch (what backward needs).
    public var activationBytes: Int
    /// Working buffers of forward and backward (reused, not saved).
    public var scratchBytes: Int
    public var totalBytes: Int { parameterBytes + gradientBytes + optimizerBytes + activationBytes + scratchBytes }

    /// `tokensPerMicroBatch` = micro_batch·T local tokens; `expertParallel` = G ranks share one copy of the experts;
    /// `expertGroupRank` picks the slice (the first E mod G ranks hold one more expert; default: the largest slice).
    public init(_ c: RunConfig, expertParallel G: Int, microBatch B: Int) {
        let m = c.model, f = c.moe
        let d = m.dModel, T = m.seqLen, V = m.vocabSize, R = m.depth, H = m.nHeads
        let N = B * T, k = f.topK, E = f.numExperts, F = f.dFF
        let mats = f.activation == .swiglu ? 3 : 2
        var trunk = 0, expertPerExpert = 0
        for t in ModelTensors.list(c) {
            if t.isExpert { expertPerExpert += t.shape.dropFirst().reduce(1, *) } else { trunk += t.shape.reduce(1, *) }
        }
        let localE = f.isDense ? 0 : (E + max(G, 1) - 1) / max(G, 1)
        parameters = trunk + localE * expertPerExpert
        parameterBytes = 4 * parameters
        gradientBytes = 4 * parameters
        optimizerBytes = 8 * parameters

        let X = f.isDense ? 0 : N * k
        var perIteration = 8 * N * d + 2 * N + B * H * T * T
        if f.isDense {
            perIteration += N * F * mats
        } else {
            perIteration += 2 * N * E + N + 4 * N * k + N * k * d + X * d + X * F * mats
        }
        let once = 2 * N * d + N + N * V + N
        activationBytes = 4 * (R * perIteration + once)
        var scratch = 6 * N * d + T * T
        if f.isDense {
            scratch += N * F * mats
        } else {
            scratch += N * k * d + X * d + 2 * X * d + X * F * mats + N * k + N * E
        }
        scratchBytes = 4 * scratch
    }
}

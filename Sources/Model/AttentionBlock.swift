// The attention half of one recurrent iteration (SPEC section 3), as a forward/backward pair:
//
//   hOut = hIn + (softmax_causal(rope(a·wq) · rope(a·wk)ᵀ / sqrt(dh)) · (a·wv)) · wo,   a = RMSNorm(hIn; attn_norm)
//
// Local: no communication (the trunk's gradients are all-reduced by the trainer).
import Kernels
import Configuration

/// What one iteration's attention saves for its backward; N = B·T tokens.
final class AttentionActivations {
    let rstd = FloatBuffer()      // [N] of RMSNorm(hIn)
    let normed = FloatBuffer()    // [N,d] RMSNorm(hIn)
    let q = FloatBuffer(), k = FloatBuffer(), v = FloatBuffer()   // [N,d] each (q, k rotated)
    let probs = FloatBuffer()     // [B,H,T,T] causal softmax
    let heads = FloatBuffer()     // [N,d] attention output, heads concatenated, before wo
}

extension AttentionActivations {
    /// Bytes saved per iteration (buffer table, see MicroBatchShape).
    static func bufferBytes(_ s: MicroBatchShape) -> Int { 4 * (s.N + 5 * s.N * s.d + s.B * s.H * s.T * s.T) }
}

final class AttentionBlock {
    let d: Int, H: Int
    let normEps: Float
    let rope: RopeTable
    let workers: Int
    // Backward scratch (one iteration at a time): [N,d] gradients, and workers·T·T of softmax gradients.
    private let dHeads = FloatBuffer(), dq = FloatBuffer(), dk = FloatBuffer(), dv = FloatBuffer()
    private let dNormed = FloatBuffer(), dScores = FloatBuffer()

    /// Bytes of the backward scratch (buffer table, see MicroBatchShape).
    static func scratchBytes(_ s: MicroBatchShape) -> Int { 4 * (5 * s.N * s.d + s.workers * s.T * s.T) }

    init(_ m: ModelConfig, workers: Int) {
        d = m.dModel; H = m.nHeads; normEps = Float(m.normEps); self.workers = workers
        rope = RopeTable(seqLen: m.seqLen, headDim: m.headDim, base: m.ropeBase)
    }

    /// hOut[N,d] = hIn + Attn(RMSNorm(hIn)) (overwritten; hOut must not alias hIn); saves into `s`.
    func forward(_ hOut: UnsafeMutablePointer<Float>, _ hIn: UnsafePointer<Float>, _ w: BlockTensors,
                 saved s: AttentionActivations, B: Int, T: Int) {
        let N = B * T
        let a = s.normed.ensure(N * d)
        rmsnormForward(a, s.rstd.ensure(N), hIn, w.attnNorm, N, d, eps: normEps, workers: workers)
        let q = s.q.ensure(N * d), k = s.k.ensure(N * d), v = s.v.ensure(N * d)
        matmulForward(q, a, w.wq, N, d, d, workers: workers)
        matmulForward(k, a, w.wk, N, d, d, workers: workers)
        matmulForward(v, a, w.wv, N, d, d, workers: workers)
        ropeForwardInPlace(q, rope, B, T, d, H, workers: workers)
        ropeForwardInPlace(k, rope, B, T, d, H, workers: workers)
        let heads = s.heads.ensure(N * d)
        attentionForward(heads, s.probs.ensure(B * H * T * T), q, k, v, B, T, d, H, workers: workers)
        hOut.update(from: hIn, count: N * d)
        matmulForwardAdding(hOut, heads, w.wo, N, d, d, workers: workers)
    }

    /// dh[N,d]: on entry d(loss)/d(hOut); the attention branch's gradient is added, leaving d(loss)/d(hIn)
    /// (the residual passes dh through unchanged). Weight gradients `g` +=.
    func backward(_ dh: UnsafeMutablePointer<Float>, _ hIn: UnsafePointer<Float>, _ w: BlockTensors, _ g: BlockTensors,
                  saved s: AttentionActivations, B: Int, T: Int) {
        let N = B * T
        let dHeads = self.dHeads.ensure(N * d)
        matmulBackwardOverwritingInput(dHeads, g.wo, dh, s.heads.pointer, w.wo, N, d, d, workers: workers)
        let dq = self.dq.zeroed(N * d), dk = self.dk.zeroed(N * d), dv = self.dv.zeroed(N * d)
        attentionBackward(dq, dk, dv, dHeads, s.q.pointer, s.k.pointer, s.v.pointer, s.probs.pointer,
                          dScores.ensure(workers * T * T), B, T, d, H, workers: workers)
        ropeBackwardInPlace(dq, rope, B, T, d, H, workers: workers)
        ropeBackwardInPlace(dk, rope, B, T, d, H, workers: workers)
        let da = dNormed.ensure(N * d)
        matmulBackwardOverwritingInput(da, g.wq, dq, s.normed.pointer, w.wq, N, d, d, workers: workers)
        matmulBackward(da, g.wk, dk, s.normed.pointer, w.wk, N, d, d, workers: workers)
        matmulBackward(da, g.wv, dv, s.normed.pointer, w.wv, N, d, d, workers: workers)
        rmsnormBackward(dh, g.attnNorm, da, hIn, w.attnNorm, s.rstd.pointer, N, d, workers: workers)
    }
}

// Causal multi-head self-attention on already-rotated q, k and v (SPEC section 3).
// Per (sequence b, head h) the head is a strided [T, dh] slice of a [B*T, C] buffer (row stride C),
// so every product is one sgemm with lda = C.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// out_h = softmax_causal(q_h · k_hᵀ / sqrt(dh)) · v_h for every head, heads concatenated into out (overwrite).
///
/// Row t of the softmax covers s ≤ t; probs[b, h, t, s] is saved for backward with entries s > t set to 0.
public func attentionForward(_ out: UnsafeMutablePointer<Float>, _ probs: UnsafeMutablePointer<Float>,
                             _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
                             _ B: Int, _ T: Int, _ C: Int, _ H: Int) {
    // out, q, k, v are (B,T,C) with C = H·dh; probs is (B,H,T,T)
    precondition(H > 0 && C % H == 0, "attention: C (\(C)) not divisible by H (\(H))")
    let dh = C / H
    let scale = 1 / Float(dh).squareRoot()
    for b in 0 ..< B {
        for h in 0 ..< H {
            let off = b * T * C + h * dh
            let P = probs + (b * H + h) * T * T
            // P[T,T] = scale · q_h · k_hᵀ (upper triangle computed, then masked)
            Blas.gemm(transA: false, transB: true, M: T, N: T, K: dh, alpha: scale,
                      A: q + off, lda: C, B: k + off, ldb: C, beta: 0, C: P, ldc: T)
            for t in 0 ..< T {
                let row = P + t * T
                let m = maxElement(row, t + 1)
                var sum: Float = 0
                for s in 0 ... t {
                    let e = exp(row[s] - m)
                    row[s] = e
                    sum += e
                }
                let inv = 1 / sum
                for s in 0 ... t { row[s] *= inv }
                for s in (t + 1) ..< T { row[s] = 0 }
            }
            // out_h[T,dh] = P · v_h
            Blas.gemm(transA: false, transB: false, M: T, N: dh, K: T, alpha: 1,
                      A: P, lda: T, B: v + off, ldb: C, beta: 0, C: out + off, ldc: C)
        }
    }
}

/// Backward of `attentionForward`, adding into dq, dk and dv. `scratch` holds T*T floats.
///
/// Per head, with S = scale · q kᵀ and P = softmax_causal(S):
/// dP = dout · vᵀ; dv += Pᵀ · dout; dS = P ⊙ (dP − rowsum(P ⊙ dP)); dq += scale · dS · k; dk += scale · dSᵀ · q.
public func attentionBackward(_ dq: UnsafeMutablePointer<Float>, _ dk: UnsafeMutablePointer<Float>,
                              _ dv: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>,
                              _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
                              _ probs: UnsafePointer<Float>, _ scratch: UnsafeMutablePointer<Float>,
                              _ B: Int, _ T: Int, _ C: Int, _ H: Int) {
    // dq, dk, dv, dout, q, k, v are (B,T,C) with C = H·dh; probs is (B,H,T,T); scratch is (T,T)
    precondition(H > 0 && C % H == 0, "attention: C (\(C)) not divisible by H (\(H))")
    let dh = C / H
    let scale = 1 / Float(dh).squareRoot()
    let dS = scratch
    for b in 0 ..< B {
        for h in 0 ..< H {
            let off = b * T * C + h * dh
            let P = probs + (b * H + h) * T * T
            // dP[T,T] = dout_h · v_hᵀ
            Blas.gemm(transA: false, transB: true, M: T, N: T, K: dh, alpha: 1,
                      A: dout + off, lda: C, B: v + off, ldb: C, beta: 0, C: dS, ldc: T)
            // dv_h[T,dh] += Pᵀ · dout_h
            Blas.gemm(transA: true, transB: false, M: T, N: dh, K: T, alpha: 1,
                      A: P, lda: T, B: dout + off, ldb: C, beta: 1, C: dv + off, ldc: C)
            // softmax backward, row by row; masked entries (P = 0) get dS = 0
            for t in 0 ..< T {
                let p = P + t * T
                let d = dS + t * T
                let dot = dotProduct(p, d, t + 1)
                for s in 0 ... t { d[s] = p[s] * (d[s] - dot) }
                for s in (t + 1) ..< T { d[s] = 0 }
            }
            // dq_h[T,dh] += scale · dS · k_h ; dk_h[T,dh] += scale · dSᵀ · q_h
            Blas.gemm(transA: false, transB: false, M: T, N: dh, K: T, alpha: scale,
                      A: dS, lda: T, B: k + off, ldb: C, beta: 1, C: dq + off, ldc: C)
            Blas.gemm(transA: true, transB: false, M: T, N: dh, K: T, alpha: scale,
                      A: dS, lda: T, B: q + off, ldb: C, beta: 1, C: dk + off, ldc: C)
        }
    }
}

// Causal multi-head self-attention on already-rotated q, k and v (SPEC section 3).
// Per (sequence b, head h) the head is a strided [T, dh] slice of a [B*T, C] buffer (row stride C),
// so every product is one sgemm with lda = C.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CVectorKernels

/// Rows per block of the causal attention: a [64, T] strip of scores and the [T, dh] keys stay in cache,
/// and row block i only multiplies against the first (i+1)·64 keys (the masked upper triangle is skipped).
public let attentionBlockRows = 64

/// out_h = softmax_causal(q_h · k_hᵀ / sqrt(dh)) · v_h for every head, heads concatenated into out (overwrite).
///
/// Row t of the softmax covers s ≤ t; probs[b, h, t, s] is saved for backward with entries s > t set to 0.
/// Computed in blocks of `blockRows` query rows; row block [r0, r1) uses keys and values 0 ..< r1 only.
public func attentionForward(_ out: UnsafeMutablePointer<Float>, _ probs: UnsafeMutablePointer<Float>,
                             _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
                             _ B: Int, _ T: Int, _ C: Int, _ H: Int, blockRows: Int = attentionBlockRows,
                             workers: Int = 1) {
    // out, q, k, v are (B,T,C) with C = H·dh; probs is (B,H,T,T)
    precondition(H > 0 && C % H == 0, "attention: C (\(C)) not divisible by H (\(H))")
    let dh = C / H
    let scale = 1 / Float(dh).squareRoot()
    let bs = max(1, blockRows)
    let W = max(1, min(workers, B * H))
    Blas.parallel(workers: W) { w in
        for bh in Blas.share(w, of: W, items: B * H) {
            let b = bh / H, h = bh % H
            let off = b * T * C + h * dh
            let P = probs + (b * H + h) * T * T
            var r0 = 0
            while r0 < T {
                let r1 = min(T, r0 + bs)
                // P[r0..<r1, 0..<r1] = scale · q_h[r0..<r1] · k_h[0..<r1]ᵀ
                Blas.gemm(transA: false, transB: true, M: r1 - r0, N: r1, K: dh, alpha: scale,
                          A: q + off + r0 * C, lda: C, B: k + off, ldb: C, beta: 0, C: P + r0 * T, ldc: T)
                for t in r0 ..< r1 {
                    let row = P + t * T
                    softmaxRow(row, t + 1)
                    (row + t + 1).update(repeating: 0, count: T - t - 1)
                }
                // out_h[r0..<r1] = P[r0..<r1, 0..<r1] · v_h[0..<r1]
                Blas.gemm(transA: false, transB: false, M: r1 - r0, N: dh, K: r1, alpha: 1,
                          A: P + r0 * T, lda: T, B: v + off, ldb: C, beta: 0, C: out + off + r0 * C, ldc: C)
                r0 = r1
            }
        }
    }
}

/// In place: row[0..<n] = softmax(row[0..<n]) (maximum and exponentials from CVectorKernels).
@inline(__always)
private func softmaxRow(_ row: UnsafeMutablePointer<Float>, _ n: Int) {
    let level = VectorKernels.level.rawValue
    let inv = 1 / cvk_exp_sum(level, row, row, n, cvk_max(level, row, n))
    forEachSIMD8(n) { i, c in store8(load8(row, i, c) * inv, row, i, c) }
}

/// Backward of `attentionForward`, adding into dq, dk and dv. `scratch` holds workers·T·T floats.
///
/// Per head, with S = scale · q kᵀ and P = softmax_causal(S):
/// dP = dout · vᵀ; dv += Pᵀ · dout; dS = P ⊙ (dP − rowsum(P ⊙ dP)); dq += scale · dS · k; dk += scale · dSᵀ · q.
/// Only the lower block triangle is computed: query row block [r0, r1) against keys 0 ..< r1 (dP, dS, dq), and
/// key block [c0, c1) against queries c0 ..< T (dv, dk), the masked entries of each diagonal block being 0.
public func attentionBackward(_ dq: UnsafeMutablePointer<Float>, _ dk: UnsafeMutablePointer<Float>,
                              _ dv: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>,
                              _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
                              _ probs: UnsafePointer<Float>, _ scratch: UnsafeMutablePointer<Float>,
                              _ B: Int, _ T: Int, _ C: Int, _ H: Int, blockRows: Int = attentionBlockRows,
                              workers: Int = 1) {
    // dq, dk, dv, dout, q, k, v are (B,T,C) with C = H·dh; probs is (B,H,T,T); scratch is (workers,T,T)
    precondition(H > 0 && C % H == 0, "attention: C (\(C)) not divisible by H (\(H))")
    let dh = C / H
    let scale = 1 / Float(dh).squareRoot()
    let bs = max(1, blockRows)
    let W = max(1, min(workers, B * H))
    Blas.parallel(workers: W) { w in
        let dS = scratch + w * T * T
        for bh in Blas.share(w, of: W, items: B * H) {
            let b = bh / H, h = bh % H
            let off = b * T * C + h * dh
            let P = probs + (b * H + h) * T * T
            var r0 = 0
            while r0 < T {
                let r1 = min(T, r0 + bs)
                // dP[r0..<r1, 0..<r1] = dout_h[r0..<r1] · v_h[0..<r1]ᵀ
                Blas.gemm(transA: false, transB: true, M: r1 - r0, N: r1, K: dh, alpha: 1,
                          A: dout + off + r0 * C, lda: C, B: v + off, ldb: C, beta: 0, C: dS + r0 * T, ldc: T)
                // softmax backward, row by row; masked entries (P = 0) get dS = 0
                for t in r0 ..< r1 {
                    let p = P + t * T
                    let d = dS + t * T
                    let dot = SIMD8<Float>(repeating: dotProduct(p, d, t + 1))
                    forEachSIMD8(t + 1) { i, c in store8(load8(p, i, c) * (load8(d, i, c) - dot), d, i, c) }
                    if t + 1 < r1 { (d + t + 1).update(repeating: 0, count: r1 - t - 1) }
                }
                // dq_h[r0..<r1] += scale · dS[r0..<r1, 0..<r1] · k_h[0..<r1]
                Blas.gemm(transA: false, transB: false, M: r1 - r0, N: dh, K: r1, alpha: scale,
                          A: dS + r0 * T, lda: T, B: k + off, ldb: C, beta: 1, C: dq + off + r0 * C, ldc: C)
                r0 = r1
            }
            var c0 = 0
            while c0 < T {
                let c1 = min(T, c0 + bs)
                // dv_h[c0..<c1] += P[c0..<T, c0..<c1]ᵀ · dout_h[c0..<T]; dk_h[c0..<c1] += scale · dS[c0..<T, c0..<c1]ᵀ · q_h[c0..<T]
                Blas.gemm(transA: true, transB: false, M: c1 - c0, N: dh, K: T - c0, alpha: 1,
                          A: P + c0 * T + c0, lda: T, B: dout + off + c0 * C, ldb: C, beta: 1, C: dv + off + c0 * C, ldc: C)
                Blas.gemm(transA: true, transB: false, M: c1 - c0, N: dh, K: T - c0, alpha: scale,
                          A: dS + c0 * T + c0, lda: T, B: q + off + c0 * C, ldb: C, beta: 1, C: dk + off + c0 * C, ldc: C)
                c0 = c1
            }
        }
    }
}

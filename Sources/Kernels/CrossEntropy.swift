// Fused softmax cross-entropy over vocabulary logits (the language-model loss of SPEC section 3).
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CVectorKernels

/// losses[i] = −log softmax(logits[i])[targets[i]] = logsumexp(logits[i]) − logits[i, targets[i]].
///
/// If `dlogits` is non-nil it is OVERWRITTEN with (softmax(logits[i]) − onehot(targets[i])) · gradScale.
/// `dlogits` may be the same buffer as `logits` (in place): each row is read fully before it is written.
/// Stable: the row maximum is subtracted before exponentiation. Returns Σ_i losses[i] in Double.
/// A target outside 0..<V stops the program (checked in release builds too).
/// Rows are independent: `workers` threads take contiguous shares of them. The sum is taken over fixed
/// chunks of rows (up to 64, at least 16 rows each), chosen by N alone, and the chunks' sums are added in
/// order, so the losses, dlogits and the sum are the same bits whatever the number of workers (ranks on
/// nodes with different core counts, or different ranks per node, run different numbers of threads).
public func crossEntropyLossAndGradient(_ dlogits: UnsafeMutablePointer<Float>?, _ losses: UnsafeMutablePointer<Float>,
                                        _ logits: UnsafePointer<Float>, _ targets: UnsafePointer<Int32>,
                                        _ N: Int, _ V: Int, gradScale: Float, workers: Int = 1) -> Double {
    let chunks = min(64, max(1, N / 16))
    if chunks == 1 { return crossEntropyRows(0 ..< N, dlogits, losses, logits, targets, V, gradScale: gradScale) }
    let W = max(1, min(workers, chunks))
    return withUnsafeTemporaryAllocation(of: Double.self, capacity: 64) { partial in
        Blas.parallel(workers: W) { w in
            for c in Blas.share(w, of: W, items: chunks) {
                partial[c] = crossEntropyRows(Blas.share(c, of: chunks, items: N), dlogits, losses, logits, targets, V,
                                              gradScale: gradScale)
            }
        }
        var total: Double = 0
        for c in 0 ..< chunks { total += partial[c] }
        return total
    }
}

/// `crossEntropyLossAndGradient` on `rows`; returns their losses' sum.
private func crossEntropyRows(_ rows: Range<Int>, _ dlogits: UnsafeMutablePointer<Float>?, _ losses: UnsafeMutablePointer<Float>,
                              _ logits: UnsafePointer<Float>, _ targets: UnsafePointer<Int32>,
                              _ V: Int, gradScale: Float) -> Double {
    // dlogits and logits are (N,V), losses and targets are (N)
    var total: Double = 0
    for i in rows {
        let target = Int(targets[i])
        guard target >= 0 && target < V else {
            fatalError("crossEntropy: target \(target) at row \(i) is outside the vocabulary 0..<\(V)")
        }
        let x = logits + i * V
        let m = cvk_max(VectorKernels.level.rawValue, x, V)
        let xTarget = x[target]   // read before an in-place pass can overwrite it
        var sum: Double = 0   // Double across chunks: V may be ~50k terms
        if let dlogits = dlogits {
            // one exp per element: store e^(x − m) in the gradient row, then scale it into softmax · gradScale;
            // each element is read before it is written, so dlogits may alias logits
            let d = dlogits + i * V
            sum = expMinusMaxSum(x, into: d, V, m)
            let scale = SIMD8<Float>(repeating: Float(Double(gradScale) / sum))
            forEachSIMD8(V) { j, c in store8(load8(d, j, c) * scale, d, j, c) }
            d[target] -= gradScale
        } else {
            sum = expMinusMaxSum(x, into: nil, V, m)
        }
        let loss = Double(m - xTarget) + log(sum)   // logits subtracted first: no cancellation at large logits
        losses[i] = Float(loss)
        total += loss
    }
    return total
}

/// Σ_j e^(x[j] − m) over n floats (CVectorKernels' vector exp; Float lanes flushed to Double every 256
/// elements); stores the exponentials into `out` when given (`out` may alias `x`).
@inline(__always)
private func expMinusMaxSum(_ x: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>?, _ n: Int, _ m: Float) -> Double {
    let level = VectorKernels.level.rawValue
    var total: Double = 0
    var chunk = 0
    while chunk < n {
        let end = min(n, chunk + 256)
        total += Double(cvk_exp_sum(level, x + chunk, out.map { $0 + chunk }, end - chunk, m))
        chunk = end
    }
    return total
}

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
/// Rows are independent: `workers` threads take contiguous shares of them (losses and dlogits are the same
/// as with one; the returned sum adds the shares' sums in order, so it may differ in the last bits).
public func crossEntropyForwardBackward(_ dlogits: UnsafeMutablePointer<Float>?, _ losses: UnsafeMutablePointer<Float>,
                                        _ logits: UnsafePointer<Float>, _ targets: UnsafePointer<Int32>,
                                        _ N: Int, _ V: Int, gradScale: Float, workers: Int = 1) -> Double {
    let W = max(1, min(workers, N / 16))
    if W == 1 { return crossEntropyRows(0 ..< N, dlogits, losses, logits, targets, V, gradScale: gradScale) }
    return withUnsafeTemporaryAllocation(of: Double.self, capacity: W) { partial in
        Blas.parallel(workers: W) { w in
            partial[w] = crossEntropyRows(Blas.share(w, of: W, items: N), dlogits, losses, logits, targets, V,
                                          gradScale: gradScale)
        }
        var total: Double = 0
        for w in 0 ..< W { total += partial[w] }
        return total
    }
}

/// `crossEntropyForwardBackward` on `rows`; returns their losses' sum.
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

// Fused softmax cross-entropy over vocabulary logits (the language-model loss of SPEC section 3).
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// losses[i] = −log softmax(logits[i])[targets[i]] = logsumexp(logits[i]) − logits[i, targets[i]].
///
/// If `dlogits` is non-nil it is OVERWRITTEN with (softmax(logits[i]) − onehot(targets[i])) · gradScale.
/// `dlogits` may be the same buffer as `logits` (in place): each row is read fully before it is written.
/// Stable: the row maximum is subtracted before exponentiation. Returns Σ_i losses[i] in Double.
/// A target outside 0..<V stops the program (checked in release builds too).
public func crossEntropyForwardBackward(_ dlogits: UnsafeMutablePointer<Float>?, _ losses: UnsafeMutablePointer<Float>,
                                        _ logits: UnsafePointer<Float>, _ targets: UnsafePointer<Int32>,
                                        _ N: Int, _ V: Int, gradScale: Float) -> Double {
    // dlogits and logits are (N,V), losses and targets are (N)
    var total: Double = 0
    for i in 0 ..< N {
        let target = Int(targets[i])
        guard target >= 0 && target < V else {
            fatalError("crossEntropy: target \(target) at row \(i) is outside the vocabulary 0..<\(V)")
        }
        let x = logits + i * V
        let m = maxElement(x, V)
        var sum: Float = 0
        for j in 0 ..< V { sum += exp(x[j] - m) }
        let logSum = log(sum)
        let loss = logSum + m - x[target]
        losses[i] = loss
        total += Double(loss)
        if let dlogits = dlogits {
            let d = dlogits + i * V
            let scale = gradScale / sum
            for j in 0 ..< V { d[j] = exp(x[j] - m) * scale }
            d[target] -= gradScale
        }
    }
    return total
}

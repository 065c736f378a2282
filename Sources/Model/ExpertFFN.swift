// One feed-forward network (a dense FFN, or one expert's slice of an expert pool)
// applied to contiguous rows: gelu(x·w1)·w2 or (silu(x·w1) ⊙ (x·w3))·w2.
// Forward saves the hidden pre-activations; backward adds into the weight
// gradients and overwrites dx.
import Kernels
import Configuration

struct FFNWeights {
    var w1: UnsafeMutablePointer<Float>      // [d, F]
    var w3: UnsafeMutablePointer<Float>?     // [d, F] (swiglu)
    var w2: UnsafeMutablePointer<Float>      // [F, d]
}

enum ExpertFFN {
    /// y[n,d] = FFN(x[n,d]); saves h1[n,F], h3[n,F] (swiglu) and act[n,F].
    static func forward(y: UnsafeMutablePointer<Float>, h1: UnsafeMutablePointer<Float>, h3: UnsafeMutablePointer<Float>,
                        act: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, w: FFNWeights,
                        n: Int, d: Int, F: Int, activation: Activation) {
        guard n > 0 else { return }
        matmulForward(h1, x, w.w1, n, d, F)
        switch activation {
        case .gelu:
            geluForward(act, h1, n * F)
        case .swiglu:
            matmulForward(h3, x, w.w3!, n, d, F)
            swigluForward(act, h1, h3, n * F)
        }
        matmulForward(y, act, w.w2, n, F, d)
    }

    /// dx[n,d] (overwritten), dw (+=) from dy[n,d]; scratch dact, dh1, dh3 of n*F each.
    static func backward(dx: UnsafeMutablePointer<Float>, dw: FFNWeights, dy: UnsafePointer<Float>,
                         x: UnsafePointer<Float>, h1: UnsafePointer<Float>, h3: UnsafePointer<Float>,
                         act: UnsafePointer<Float>, w: FFNWeights,
                         dact: UnsafeMutablePointer<Float>, dh1: UnsafeMutablePointer<Float>, dh3: UnsafeMutablePointer<Float>,
                         n: Int, d: Int, F: Int, activation: Activation) {
        guard n > 0 else { return }
        dact.update(repeating: 0, count: n * F)
        matmulBackward(dact, dw.w2, dy, act, w.w2, n, F, d)
        dh1.update(repeating: 0, count: n * F)
        dx.update(repeating: 0, count: n * d)
        switch activation {
        case .gelu:
            geluBackward(dh1, h1, dact, n * F)
        case .swiglu:
            dh3.update(repeating: 0, count: n * F)
            swigluBackward(dh1, dh3, dact, h1, h3, n * F)
            matmulBackward(dx, dw.w3!, dh3, x, w.w3!, n, d, F)
        }
        matmulBackward(dx, dw.w1, dh1, x, w.w1, n, d, F)
    }
}

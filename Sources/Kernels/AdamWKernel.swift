// The AdamW element loop (SPEC section 4) over one contiguous range: CVectorKernels' `cvk_adamw`, per vector
// level. Per element, in Float: g ← g·gradScale; m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g·g;
// θ ← θ − lr·((m/c1)/(sqrt(v/c2) + eps) + wd·θ), with c1, c2 the bias corrections 1 − β^t.
import CVectorKernels

public struct AdamWCoefficients: Sendable {
    public var beta1: Float, beta2: Float, c1: Float, c2: Float, lr: Float, eps: Float, weightDecay: Float, gradScale: Float

    public init(beta1: Float, beta2: Float, c1: Float, c2: Float, lr: Float, eps: Float, weightDecay: Float,
                gradScale: Float) {
        self.beta1 = beta1; self.beta2 = beta2; self.c1 = c1; self.c2 = c2; self.lr = lr; self.eps = eps
        self.weightDecay = weightDecay; self.gradScale = gradScale
    }
}

/// One AdamW update of n elements in place (param, expAvg, expAvgSq); grad is read only.
public func adamWStep(param: UnsafeMutablePointer<Float>, grad: UnsafePointer<Float>,
                      expAvg: UnsafeMutablePointer<Float>, expAvgSq: UnsafeMutablePointer<Float>, count n: Int,
                      _ k: AdamWCoefficients, level: VectorKernels.Level = VectorKernels.level) {
    let p = cvk_adamw_params(beta1: k.beta1, beta2: k.beta2, c1: k.c1, c2: k.c2, lr: k.lr, eps: k.eps,
                             weight_decay: k.weightDecay, grad_scale: k.gradScale)
    cvk_adamw(level.rawValue, param, grad, expAvg, expAvgSq, n, p)
}

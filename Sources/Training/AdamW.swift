// AdamW with bias correction (SPEC section 4), a flat loop over the ParameterStore
// split over the rank's threads; weight decay only on tensors marked `decays`.
import Foundation
import Configuration
import Model
import Kernels

public struct AdamW: Sendable {
    public let beta1: Double, beta2: Double, eps: Double, weightDecay: Double

    public init(_ t: TrainConfig) { beta1 = t.beta1; beta2 = t.beta2; eps = t.eps; weightDecay = t.weightDecay }

    /// Applies update number `t` (1-based, counts applied updates only) with learning rate `lr`,
    /// using gradients multiplied by `gradScale` (the clipping factor). The update is element-wise, so
    /// `workers` threads take contiguous shares of the flat parameter array with the same result as one.
    public func update(_ s: ParameterStore, lr: Double, t: Int, gradScale: Float, workers: Int = 1) {
        let W = max(1, min(workers, s.count / 65536))      // small models: not worth a thread
        Blas.parallel(workers: W) { w in
            let share = Blas.share(w, of: W, items: s.count)
            for index in 0 ..< s.infos.count where s.infos[index].count > 0 {   // index loop: no iterator allocation
                let p = s.infos[index]
                let lo = max(p.offset, share.lowerBound), hi = min(p.offset + p.count, share.upperBound)
                if lo < hi { update(s, p, lo - p.offset ..< hi - p.offset, lr: lr, t: t, gradScale: gradScale) }
            }
        }
    }

    /// Elements `range` of tensor `p`.
    private func update(_ s: ParameterStore, _ p: ParameterInfo, _ range: Range<Int>, lr: Double, t: Int, gradScale: Float) {
        let k = AdamWCoefficients(beta1: Float(beta1), beta2: Float(beta2),
                                  c1: Float(1 - pow(beta1, Double(t))), c2: Float(1 - pow(beta2, Double(t))),
                                  lr: Float(lr), eps: Float(eps), weightDecay: p.decays ? Float(weightDecay) : 0,
                                  gradScale: gradScale)
        let o = p.offset + range.lowerBound
        adamWStep(param: s.params + o, grad: s.grads + o, expAvg: s.expAvg + o, expAvgSq: s.expAvgSq + o,
                  count: range.count, k)
    }
}

// AdamW with bias correction (SPEC section 4), one flat loop over the
// ParameterStore; weight decay only on tensors marked `decays`.
import Foundation
import Configuration
import Model

public struct AdamW: Sendable {
    public let beta1: Double, beta2: Double, eps: Double, weightDecay: Double

    public init(_ t: TrainConfig) { beta1 = t.beta1; beta2 = t.beta2; eps = t.eps; weightDecay = t.weightDecay }

    /// Applies update number `t` (1-based, counts applied updates only) with learning rate `lr`,
    /// using gradients multiplied by `gradScale` (the clipping factor).
    public func update(_ s: ParameterStore, lr: Double, t: Int, gradScale: Float) {
        let b1 = Float(beta1), b2 = Float(beta2)
        let c1 = Float(1 - pow(beta1, Double(t))), c2 = Float(1 - pow(beta2, Double(t)))
        let lrF = Float(lr), epsF = Float(eps)
        for index in 0 ..< s.infos.count where s.infos[index].count > 0 {   // index loop: no iterator allocation
            let p = s.infos[index]
            let wd = p.decays ? Float(weightDecay) : 0
            let th = s.params + p.offset, g = s.grads + p.offset, m = s.expAvg + p.offset, v = s.expAvgSq + p.offset
            // 8 lanes at a time (the same IEEE operations per element as the scalar tail).
            let n8 = p.count / 8 * 8
            var i = 0
            while i < n8 {
                let gi = UnsafeRawPointer(g + i).loadUnaligned(as: SIMD8<Float>.self) * gradScale
                var mi = UnsafeRawPointer(m + i).loadUnaligned(as: SIMD8<Float>.self)
                var vi = UnsafeRawPointer(v + i).loadUnaligned(as: SIMD8<Float>.self)
                var ti = UnsafeRawPointer(th + i).loadUnaligned(as: SIMD8<Float>.self)
                mi = b1 * mi + (1 - b1) * gi
                vi = b2 * vi + (1 - b2) * gi * gi
                let mHat = mi / c1, vHat = vi / c2
                ti -= lrF * (mHat / (vHat.squareRoot() + epsF) + wd * ti)
                UnsafeMutableRawPointer(m + i).storeBytes(of: mi, as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(v + i).storeBytes(of: vi, as: SIMD8<Float>.self)
                UnsafeMutableRawPointer(th + i).storeBytes(of: ti, as: SIMD8<Float>.self)
                i += 8
            }
            for i in n8 ..< p.count {
                let gi = g[i] * gradScale
                m[i] = b1 * m[i] + (1 - b1) * gi
                v[i] = b2 * v[i] + (1 - b2) * gi * gi
                let mHat = m[i] / c1, vHat = v[i] / c2
                th[i] -= lrF * (mHat / (vHat.squareRoot() + epsF) + wd * th[i])
            }
        }
    }
}

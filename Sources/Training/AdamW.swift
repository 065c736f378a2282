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
        let b1 = Float(beta1), b2 = Float(beta2)
        let c1 = Float(1 - pow(beta1, Double(t))), c2 = Float(1 - pow(beta2, Double(t)))
        let lrF = Float(lr), epsF = Float(eps)
        let wd = p.decays ? Float(weightDecay) : 0
        let o = p.offset + range.lowerBound, n = range.count
        let th = s.params + o, g = s.grads + o, m = s.expAvg + o, v = s.expAvgSq + o
        // 8 lanes at a time (the same IEEE operations per element as the scalar tail).
        let n8 = n / 8 * 8
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
        for i in n8 ..< n {
            let gi = g[i] * gradScale
            m[i] = b1 * m[i] + (1 - b1) * gi
            v[i] = b2 * v[i] + (1 - b2) * gi * gi
            let mHat = m[i] / c1, vHat = v[i] / c2
            th[i] -= lrF * (mHat / (vHat.squareRoot() + epsF) + wd * th[i])
        }
    }
}

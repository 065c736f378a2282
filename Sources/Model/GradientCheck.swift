// Finite-difference check of the whole model's gradient, tensor by tensor.
//
// Float32 forward passes are too noisy for element-wise differences on small
// gradients, so each tensor is checked along random directions v (one per
// tensor, normalised): the analytic directional derivative <g, v> against
// (L(θ + εv) − L(θ − εv)) / 2ε, with L accumulated in Double. The direction is
// half the normalised gradient and half a random unit vector, so the expected
// change of the loss is large against Float rounding while a gradient that is
// wrong in any direction still disagrees.
//
// Routing decisions (top-k sets, capacity drops, the aux loss's f_e) are
// piecewise constant: the analytic gradient is the derivative with them held
// fixed. The perturbed passes therefore replay the decisions made at θ
// (`RecurrentMoEModel.replayRouting`) while the gates still follow the router
// probabilities, so a near-tie cannot make the finite difference jump.
import Configuration

public struct GradientCheckRow: Sendable {
    public var path: String
    public var analytic: Double
    public var numeric: Double
    /// |analytic − numeric| / max(|analytic|, |numeric|, 1e-6)
    public var relativeError: Double
}

public enum GradientCheck {
    /// The loss of SPEC section 3 for one micro-batch, world size 1 semantics.
    public static func loss(_ r: MicroStepResult, scales: LossScales) -> Double {
        var l = r.ceSum * scales.ce
        for s in r.routing { l += scales.aux * s.aux + scales.z * s.z }
        return l
    }

    /// Runs the check on `model` with one micro-batch; returns one row per parameter tensor (local slices).
    /// Each tensor is tried with every step size in `epsilons` and `directions` random directions; the
    /// smallest error is reported (Float rounding is the only noise left, and it shrinks with larger steps).
    /// The rounding error of the difference grows as ε shrinks: a tensor with a small directional derivative
    /// (a norm weight of the tiny dense SwiGLU model: about 1.5e-4) measured 2e-2, 3e-3 and 4e-4 relative
    /// error with ε = 3e-3, 1e-2 and 3e-2 alone (two directions each), and 5.6e-3 with the list [1e-2, 3e-3]
    /// after the loss's last bits changed, hence 3e-2 in the list; the smaller steps serve tensors whose
    /// curvature needs them (the depth embedding: 9e-2 at 3e-2 alone, 7e-4 with the list). A wrong gradient
    /// stays wrong at every step size, so a larger list lowers the noise, not the check's power.
    public static func run(model: RecurrentMoEModel, inputs: [Int32], targets: [Int32], B: Int, T: Int,
                           epsilons: [Double] = [3e-2, 1e-2, 3e-3], directions: Int = 2,
                           seed: UInt64 = 7) -> [GradientCheckRow] {
        let c = model.config
        let R = Double(c.model.depth)
        let scales = LossScales(ce: 1 / Double(B * T), aux: c.moe.auxLossCoef / R, z: c.moe.zLossCoef / R)
        let store = model.store
        func evaluate(backward: Bool) -> Double {
            inputs.withUnsafeBufferPointer { x in
                targets.withUnsafeBufferPointer { y in
                    loss(model.step(inputs: x.baseAddress!, targets: y.baseAddress!, B: B, T: T, scales: scales,
                                    applyCapacity: true, backward: backward), scales: scales)
                }
            }
        }
        store.zeroGrads()
        _ = evaluate(backward: true)           // decides the routing that the perturbed passes replay
        let grads = Array(UnsafeBufferPointer(start: store.grads, count: store.count))
        model.replayRouting = true
        defer { model.replayRouting = false }
        var rng = SplitMix64(seed: seed)
        var rows: [GradientCheckRow] = []
        for p in store.infos where p.count > 0 {
            let g = Array(grads[p.offset ..< p.offset + p.count])
            let gnorm = g.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            var best: GradientCheckRow? = nil
            tries: for epsilon in epsilons {
                for _ in 0 ..< directions {
                    var v = (0 ..< p.count).map { _ in rng.nextNormal() }
                    let rnorm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
                    for i in 0 ..< p.count { v[i] = v[i] / rnorm + (gnorm > 0 ? Double(g[i]) / gnorm : 0) }
                    let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
                    v = v.map { $0 / norm }
                    var dot = 0.0
                    for i in 0 ..< p.count { dot += Double(g[i]) * v[i] }
                    let saved = Array(UnsafeBufferPointer(start: store.params + p.offset, count: p.count))
                    func shifted(_ s: Double) -> Double {
                        for i in 0 ..< p.count { store.params[p.offset + i] = Float(Double(saved[i]) + s * v[i]) }
                        return evaluate(backward: false)
                    }
                    let plus = shifted(epsilon), minus = shifted(-epsilon)
                    for i in 0 ..< p.count { store.params[p.offset + i] = saved[i] }
                    let numeric = (plus - minus) / (2 * epsilon)
                    let err = abs(dot - numeric) / max(abs(dot), abs(numeric), 1e-6)
                    if best == nil || err < best!.relativeError {
                        best = GradientCheckRow(path: p.path, analytic: dot, numeric: numeric, relativeError: err)
                    }
                    if err < 1e-4 { break tries }
                }
            }
            rows.append(best!)
        }
        return rows
    }
}

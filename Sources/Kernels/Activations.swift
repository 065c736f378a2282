// Element-wise FFN activations: GELU (tanh form) and SwiGLU (SPEC section 3, dense FFN). The loops are in
// CVectorKernels (built per vector level, see VectorKernels); `level` is there for the tests that compare levels.
import CVectorKernels

/// out = gelu(inp), gelu(x) = 0.5x(1 + tanh(sqrt(2/π)(x + 0.044715x³))), computed as x·σ(2u)
/// (0.5(1 + tanh u) = σ(2u), σ(a) = 1/(1 + e^(−a))) with a vector exp.
public func geluForward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ n: Int,
                        level: VectorKernels.Level = VectorKernels.level) {
    // out and inp are (n)
    cvk_gelu_forward(level.rawValue, out, inp, n)
}

/// dinp += dout · gelu'(inp), with u = sqrt(2/π)(x + 0.044715x³) and s = σ(2u) = 0.5(1 + tanh u):
/// gelu'(x) = 0.5(1 + tanh u) + 0.5x(1 − tanh²u)·u' = s + 2x·s(1 − s)·sqrt(2/π)(1 + 3·0.044715x²).
public func geluBackward(_ dinp: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                         _ dout: UnsafePointer<Float>, _ n: Int, level: VectorKernels.Level = VectorKernels.level) {
    // dinp, inp and dout are (n)
    cvk_gelu_backward(level.rawValue, dinp, inp, dout, n)
}

/// In place: d = d · gelu'(inp) (the same per-element operations as `geluBackward` into a zero gradient),
/// so that the expert backward turns d(act) into d(h1) without a second [n, F] buffer or a zeroing pass.
public func geluBackwardInPlace(_ d: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ n: Int,
                                level: VectorKernels.Level = VectorKernels.level) {
    // d and inp are (n)
    cvk_gelu_backward_inplace(level.rawValue, d, inp, n)
}

/// out = silu(a) ⊙ b, silu(a) = a·σ(a), σ(a) = 1/(1 + e^(−a)).
public func swigluForward(_ out: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                          _ n: Int, level: VectorKernels.Level = VectorKernels.level) {
    // out, a and b are (n)
    cvk_swiglu_forward(level.rawValue, out, a, b, n)
}

/// In place: with g = d on entry, d = g · b · σ(a)(1 + a(1 − σ(a))) and db = g · a·σ(a) (overwritten):
/// `swigluBackward` into zero gradients, reusing the buffer of d(out) for d(a).
public func swigluBackwardInPlace(_ d: UnsafeMutablePointer<Float>, _ db: UnsafeMutablePointer<Float>,
                                  _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int,
                                  level: VectorKernels.Level = VectorKernels.level) {
    // d, db, a and b are (n)
    cvk_swiglu_backward_inplace(level.rawValue, d, db, a, b, n)
}

/// da += dout · b · σ(a)(1 + a(1 − σ(a))) and db += dout · a·σ(a).
public func swigluBackward(_ da: UnsafeMutablePointer<Float>, _ db: UnsafeMutablePointer<Float>,
                           _ dout: UnsafePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                           _ n: Int, level: VectorKernels.Level = VectorKernels.level) {
    // da, db, dout, a and b are (n)
    cvk_swiglu_backward(level.rawValue, da, db, dout, a, b, n)
}

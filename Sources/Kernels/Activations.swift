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

/// In place (overwrites d): d = d · gelu'(inp), with u = sqrt(2/π)(x + 0.044715x³) and s = σ(2u) = 0.5(1 + tanh u):
/// gelu'(x) = 0.5(1 + tanh u) + 0.5x(1 − tanh²u)·u' = s + 2x·s(1 − s)·sqrt(2/π)(1 + 3·0.044715x²). The expert
/// backward turns d(act) into d(h1) this way, without a second [n, F] buffer or a zeroing pass.
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

/// In place (overwrites d and db): with g = d on entry, d = g · b · σ(a)(1 + a(1 − σ(a))) and db = g · a·σ(a),
/// reusing the buffer of d(out) for d(a).
public func swigluBackwardInPlace(_ d: UnsafeMutablePointer<Float>, _ db: UnsafeMutablePointer<Float>,
                                  _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int,
                                  level: VectorKernels.Level = VectorKernels.level) {
    // d, db, a and b are (n)
    cvk_swiglu_backward_inplace(level.rawValue, d, db, a, b, n)
}

// Element-wise FFN activations: GELU (tanh form) and SwiGLU (SPEC section 3, dense FFN).
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

private let geluScale: Float = 0.7978845608028654   // sqrt(2/π)
private let geluCubic: Float = 0.044715

/// out = gelu(inp), gelu(x) = 0.5x(1 + tanh(sqrt(2/π)(x + 0.044715x³))), computed as x·σ(2u)
/// (0.5(1 + tanh u) = σ(2u), σ(a) = 1/(1 + e^(−a))) with an eight-lane exp.
public func geluForward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ n: Int) {
    // out and inp are (n)
    forEachSIMD8(n) { i, c in
        let x = load8(inp, i, c)
        let u: SIMD8<Float> = geluScale * (x + geluCubic * (x * x * x))
        let s = 1 / (1 + simdExp(-2 * u))
        store8(x * s, out, i, c)
    }
}

/// dinp += dout · gelu'(inp), with u = sqrt(2/π)(x + 0.044715x³) and s = σ(2u) = 0.5(1 + tanh u):
/// gelu'(x) = 0.5(1 + tanh u) + 0.5x(1 − tanh²u)·u' = s + 2x·s(1 − s)·sqrt(2/π)(1 + 3·0.044715x²).
public func geluBackward(_ dinp: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                         _ dout: UnsafePointer<Float>, _ n: Int) {
    // dinp, inp and dout are (n)
    forEachSIMD8(n) { i, c in
        store8(load8(dinp, i, c) + load8(dout, i, c) * geluDerivative(load8(inp, i, c)), dinp, i, c)
    }
}

/// gelu'(x) in eight lanes (see `geluBackward`).
@inline(__always)
private func geluDerivative(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let u: SIMD8<Float> = geluScale * (x + geluCubic * (x * x * x))
    let s = 1 / (1 + simdExp(-2 * u))
    let x2: SIMD8<Float> = x * x
    let du: SIMD8<Float> = geluScale * (1 + (3 * geluCubic) * x2)
    let ds: SIMD8<Float> = 2 * x * s * (1 - s)
    return s + ds * du
}

/// In place: d = d · gelu'(inp) (the same per-element operations as `geluBackward` into a zero gradient),
/// so that the expert backward turns d(act) into d(h1) without a second [n, F] buffer or a zeroing pass.
public func geluBackwardInPlace(_ d: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ n: Int) {
    // d and inp are (n)
    forEachSIMD8(n) { i, c in store8(load8(d, i, c) * geluDerivative(load8(inp, i, c)), d, i, c) }
}

/// out = silu(a) ⊙ b, silu(a) = a·σ(a), σ(a) = 1/(1 + e^(−a)).
public func swigluForward(_ out: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                          _ n: Int) {
    // out, a and b are (n)
    forEachSIMD8(n) { i, c in
        let x = load8(a, i, c)
        let sig = 1 / (1 + simdExp(-x))
        store8(x * sig * load8(b, i, c), out, i, c)
    }
}

/// In place: with g = d on entry, d = g · b · σ(a)(1 + a(1 − σ(a))) and db = g · a·σ(a) (overwritten):
/// `swigluBackward` into zero gradients, reusing the buffer of d(out) for d(a).
public func swigluBackwardInPlace(_ d: UnsafeMutablePointer<Float>, _ db: UnsafeMutablePointer<Float>,
                                  _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) {
    // d, db, a and b are (n)
    forEachSIMD8(n) { i, c in
        let x = load8(a, i, c)
        let sig = 1 / (1 + simdExp(-x))
        let g = load8(d, i, c)
        let dsilu: SIMD8<Float> = sig * (1 + x * (1 - sig))
        store8(g * load8(b, i, c) * dsilu, d, i, c)
        store8(g * x * sig, db, i, c)
    }
}

/// da += dout · b · σ(a)(1 + a(1 − σ(a))) and db += dout · a·σ(a).
public func swigluBackward(_ da: UnsafeMutablePointer<Float>, _ db: UnsafeMutablePointer<Float>,
                           _ dout: UnsafePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                           _ n: Int) {
    // da, db, dout, a and b are (n)
    forEachSIMD8(n) { i, c in
        let x = load8(a, i, c)
        let sig = 1 / (1 + simdExp(-x))
        let g = load8(dout, i, c)
        let dsilu: SIMD8<Float> = sig * (1 + x * (1 - sig))
        store8(load8(da, i, c) + g * load8(b, i, c) * dsilu, da, i, c)
        store8(load8(db, i, c) + g * x * sig, db, i, c)
    }
}

// Element-wise FFN activations: GELU (tanh form) and SwiGLU (SPEC section 3, dense FFN).
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

private let geluScale: Float = 0.7978845608028654   // sqrt(2/π)
private let geluCubic: Float = 0.044715

/// out = gelu(inp), gelu(x) = 0.5x(1 + tanh(sqrt(2/π)(x + 0.044715x³))).
public func geluForward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ n: Int) {
    // out and inp are (n)
    for i in 0 ..< n {
        let x = inp[i]
        let u = geluScale * (x + geluCubic * x * x * x)
        out[i] = 0.5 * x * (1 + tanh(u))
    }
}

/// dinp += dout · gelu'(inp), with u = sqrt(2/π)(x + 0.044715x³):
/// gelu'(x) = 0.5(1 + tanh u) + 0.5x(1 − tanh²u)·sqrt(2/π)(1 + 3·0.044715x²).
public func geluBackward(_ dinp: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                         _ dout: UnsafePointer<Float>, _ n: Int) {
    // dinp, inp and dout are (n)
    for i in 0 ..< n {
        let x = inp[i]
        let u = geluScale * (x + geluCubic * x * x * x)
        let th = tanh(u)
        let sech2 = 1 - th * th
        let local = 0.5 * (1 + th) + 0.5 * x * sech2 * geluScale * (1 + 3 * geluCubic * x * x)
        dinp[i] += dout[i] * local
    }
}

/// out = silu(a) ⊙ b, silu(a) = a·σ(a), σ(a) = 1/(1 + e^(−a)).
public func swigluForward(_ out: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                          _ n: Int) {
    // out, a and b are (n)
    for i in 0 ..< n {
        let x = a[i]
        let sig = 1 / (1 + exp(-x))
        out[i] = x * sig * b[i]
    }
}

/// da += dout · b · σ(a)(1 + a(1 − σ(a))) and db += dout · a·σ(a).
public func swigluBackward(_ da: UnsafeMutablePointer<Float>, _ db: UnsafeMutablePointer<Float>,
                           _ dout: UnsafePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                           _ n: Int) {
    // da, db, dout, a and b are (n)
    for i in 0 ..< n {
        let x = a[i]
        let sig = 1 / (1 + exp(-x))
        let g = dout[i]
        da[i] += g * b[i] * sig * (1 + x * (1 - sig))
        db[i] += g * x * sig
    }
}

// RMSNorm over the last axis (SPEC section 3), no bias, no mean subtraction.

/// out[i] = inp[i] · rstd[i] ⊙ weight, with rstd[i] = 1 / sqrt(mean_c(inp[i,c]²) + eps) saved for backward.
public func rmsnormForward(_ out: UnsafeMutablePointer<Float>, _ rstd: UnsafeMutablePointer<Float>,
                           _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ N: Int, _ C: Int, eps: Float) {
    // out and inp are (N,C), weight is (C), rstd is (N)
    for i in 0 ..< N {
        let x = inp + i * C
        let y = out + i * C
        let ms = dotProduct(x, x, C) / Float(C)
        let r = 1 / (ms + eps).squareRoot()
        rstd[i] = r
        for c in 0 ..< C { y[c] = x[c] * r * weight[c] }
    }
}

/// Backward of `rmsnormForward` (adds into dinp and dweight).
///
/// With r = rstd[i] and x = inp[i]: dweight[c] += dout[i,c]·x[c]·r and
/// dinp[i,c] += r·(dout[i,c]·g[c] − x[c]·r²·(1/C)·Σ_j dout[i,j]·g[j]·x[j]).
public func rmsnormBackward(_ dinp: UnsafeMutablePointer<Float>, _ dweight: UnsafeMutablePointer<Float>,
                            _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                            _ rstd: UnsafePointer<Float>, _ N: Int, _ C: Int) {
    // dinp, dout and inp are (N,C), dweight and weight are (C), rstd is (N)
    for i in 0 ..< N {
        let x = inp + i * C
        let dy = dout + i * C
        let dx = dinp + i * C
        let r = rstd[i]
        let k = r * r * dotProduct3(dy, weight, x, C) / Float(C)
        for c in 0 ..< C {
            dweight[c] += dy[c] * x[c] * r
            dx[c] += r * (dy[c] * weight[c] - x[c] * k)
        }
    }
}

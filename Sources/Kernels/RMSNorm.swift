// RMSNorm over the last axis (SPEC section 3), no bias, no mean subtraction.
// With `workers` > 1, rows (and, for the weight gradient, columns) are split over that many threads with
// the same per-element operations in the same order, so the results are bit-identical to one thread.

/// out[i] = inp[i] · rstd[i] ⊙ weight, with rstd[i] = 1 / sqrt(mean_c(inp[i,c]²) + eps) saved for backward.
public func rmsnormForward(_ out: UnsafeMutablePointer<Float>, _ rstd: UnsafeMutablePointer<Float>,
                           _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ N: Int, _ C: Int, eps: Float,
                           workers: Int = 1) {
    // out and inp are (N,C), weight is (C), rstd is (N)
    Blas.forEachShare(of: N, width: C, workers: workers) { rows in
        rmsnormForwardRows(rows, out, rstd, inp, weight, C, eps: eps)
    }
}

@inline(__always)
private func rmsnormForwardRows(_ rows: Range<Int>, _ out: UnsafeMutablePointer<Float>, _ rstd: UnsafeMutablePointer<Float>,
                                _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ C: Int, eps: Float) {
    for i in rows {
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
/// On several threads, dinp is split by rows and dweight by columns (each column still summed in row order).
public func rmsnormBackward(_ dinp: UnsafeMutablePointer<Float>, _ dweight: UnsafeMutablePointer<Float>,
                            _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                            _ rstd: UnsafePointer<Float>, _ N: Int, _ C: Int, workers: Int = 1) {
    // dinp, dout and inp are (N,C), dweight and weight are (C), rstd is (N)
    let W = Blas.rowWorkers(workers, rows: N, width: C)
    if W == 1 { rmsnormBackwardRows(0 ..< N, dinp, dweight, dout, inp, weight, rstd, C); return }
    Blas.forEachShare(of: N, width: C, workers: workers) { rows in
        rmsnormBackwardRows(rows, dinp, nil, dout, inp, weight, rstd, C)
    }
    Blas.parallel(workers: W) { w in
        let cols = Blas.share(w, of: W, items: C)
        for i in 0 ..< N {
            let x = inp + i * C, dy = dout + i * C, r = rstd[i]
            for c in cols { dweight[c] += dy[c] * x[c] * r }
        }
    }
}

/// `rmsnormBackward` on `rows`; adds the weight gradient too when `dweight` is given.
@inline(__always)
private func rmsnormBackwardRows(_ rows: Range<Int>, _ dinp: UnsafeMutablePointer<Float>, _ dweight: UnsafeMutablePointer<Float>?,
                                 _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                                 _ rstd: UnsafePointer<Float>, _ C: Int) {
    for i in rows {
        let x = inp + i * C
        let dy = dout + i * C
        let dx = dinp + i * C
        let r = rstd[i]
        let k = r * r * dotProduct3(dy, weight, x, C) / Float(C)
        if let dweight {
            for c in 0 ..< C {
                dweight[c] += dy[c] * x[c] * r
                dx[c] += r * (dy[c] * weight[c] - x[c] * k)
            }
        } else {
            for c in 0 ..< C { dx[c] += r * (dy[c] * weight[c] - x[c] * k) }
        }
    }
}

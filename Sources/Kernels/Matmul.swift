// Matmul: dense products y = x · W (weights stored [in, out]) and the tied head y = x · Wᵀ (weights [out, in]).
// All products go through Blas (on `workers` threads when given). Naming as in docs/kernels.md: forwards
// overwrite, backwards add into their gradients, and the two that do otherwise say so in their names.

/// out[N,OC] = inp[N,C] · weight[C,OC] (overwritten).
public func matmulForward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                          _ N: Int, _ C: Int, _ OC: Int, workers: Int = 1) {
    matmulProduct(out, inp, weight, N, C, OC, beta: 0, workers: workers)
}

/// out[N,OC] += inp[N,C] · weight[C,OC] (a residual branch added onto its input in one product).
public func matmulForwardAdding(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                                _ weight: UnsafePointer<Float>, _ N: Int, _ C: Int, _ OC: Int, workers: Int = 1) {
    matmulProduct(out, inp, weight, N, C, OC, beta: 1, workers: workers)
}

private func matmulProduct(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                           _ N: Int, _ C: Int, _ OC: Int, beta: Float, workers: Int) {
    // out is (N,OC), inp is (N,C), weight is (C,OC)
    Blas.parallelGemm(workers: workers, transA: false, transB: false, M: N, N: OC, K: C, alpha: 1,
              A: inp, lda: C, B: weight, ldb: OC, beta: beta, C: out, ldc: OC)
}

/// Backward of `matmulForward`: dinp[N,C] += dout · weightᵀ and dweight[C,OC] += inpᵀ · dout.
/// A nil gradient is skipped.
public func matmulBackward(_ dinp: UnsafeMutablePointer<Float>?, _ dweight: UnsafeMutablePointer<Float>?,
                           _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                           _ N: Int, _ C: Int, _ OC: Int, workers: Int = 1) {
    matmulGradients(dinp, dweight, dout, inp, weight, N, C, OC, inputBeta: 1, workers: workers)
}

/// `matmulBackward`, except that dinp = dout · weightᵀ is OVERWRITTEN (its prior contents, even NaN, are
/// ignored): the first contribution to a scratch gradient needs no zeroing pass. dweight += as always.
public func matmulBackwardOverwritingInput(_ dinp: UnsafeMutablePointer<Float>, _ dweight: UnsafeMutablePointer<Float>?,
                                           _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>,
                                           _ weight: UnsafePointer<Float>, _ N: Int, _ C: Int, _ OC: Int, workers: Int = 1) {
    matmulGradients(dinp, dweight, dout, inp, weight, N, C, OC, inputBeta: 0, workers: workers)
}

private func matmulGradients(_ dinp: UnsafeMutablePointer<Float>?, _ dweight: UnsafeMutablePointer<Float>?,
                             _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                             _ N: Int, _ C: Int, _ OC: Int, inputBeta: Float, workers: Int) {
    // dout is (N,OC), inp and dinp are (N,C), weight and dweight are (C,OC)
    if let dinp = dinp {
        Blas.parallelGemm(workers: workers, transA: false, transB: true, M: N, N: C, K: OC, alpha: 1,
                  A: dout, lda: OC, B: weight, ldb: OC, beta: inputBeta, C: dinp, ldc: C)
    }
    if let dweight = dweight {
        Blas.parallelGemm(workers: workers, transA: true, transB: false, M: C, N: OC, K: N, alpha: 1,
                  A: inp, lda: C, B: dout, ldb: OC, beta: 1, C: dweight, ldc: OC)
    }
}

/// Tied head: out[N,OC] = inp[N,C] · weightᵀ, with weight stored [OC,C] (e.g. the embedding table [V, d]).
public func matmulTransposedForward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>,
                                    _ weight: UnsafePointer<Float>, _ N: Int, _ C: Int, _ OC: Int, workers: Int = 1) {
    // out is (N,OC), inp is (N,C), weight is (OC,C)
    Blas.parallelGemm(workers: workers, transA: false, transB: true, M: N, N: OC, K: C, alpha: 1,
              A: inp, lda: C, B: weight, ldb: C, beta: 0, C: out, ldc: OC)
}

/// Backward of `matmulTransposedForward`: dinp[N,C] += dout · weight and dweight[OC,C] += doutᵀ · inp.
/// A nil gradient is skipped.
public func matmulTransposedBackward(_ dinp: UnsafeMutablePointer<Float>?, _ dweight: UnsafeMutablePointer<Float>?,
                                     _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>,
                                     _ weight: UnsafePointer<Float>, _ N: Int, _ C: Int, _ OC: Int, workers: Int = 1) {
    // dout is (N,OC), inp and dinp are (N,C), weight and dweight are (OC,C)
    if let dinp = dinp {
        Blas.parallelGemm(workers: workers, transA: false, transB: false, M: N, N: C, K: OC, alpha: 1,
                  A: dout, lda: OC, B: weight, ldb: C, beta: 1, C: dinp, ldc: C)
    }
    if let dweight = dweight {
        Blas.parallelGemm(workers: workers, transA: true, transB: false, M: OC, N: C, K: N, alpha: 1,
                  A: dout, lda: OC, B: inp, ldb: C, beta: 1, C: dweight, ldc: C)
    }
}

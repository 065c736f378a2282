// Matmul: dense products y = x · W (weights stored [in, out]) and the tied head y = x · Wᵀ (weights [out, in]).
// All products go through Blas (on `workers` threads when given); backward functions add into their gradients.

/// out[N,OC] = inp[N,C] · weight[C,OC]. With `accumulate`, out += inp · weight instead of overwriting.
public func matmulForward(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                          _ N: Int, _ C: Int, _ OC: Int, accumulate: Bool = false, workers: Int = 1) {
    // out is (N,OC), inp is (N,C), weight is (C,OC)
    Blas.parallelGemm(workers: workers, transA: false, transB: false, M: N, N: OC, K: C, alpha: 1,
              A: inp, lda: C, B: weight, ldb: OC, beta: accumulate ? 1 : 0, C: out, ldc: OC)
}

/// Backward of `matmulForward`: dinp[N,C] += dout · weightᵀ and dweight[C,OC] += inpᵀ · dout.
/// A nil gradient is skipped. With `overwriteInput`, dinp = dout · weightᵀ instead (its prior contents,
/// even NaN, are ignored): the first contribution to a scratch gradient needs no zeroing pass.
public func matmulBackward(_ dinp: UnsafeMutablePointer<Float>?, _ dweight: UnsafeMutablePointer<Float>?,
                           _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
                           _ N: Int, _ C: Int, _ OC: Int, overwriteInput: Bool = false, workers: Int = 1) {
    // dout is (N,OC), inp and dinp are (N,C), weight and dweight are (C,OC)
    if let dinp = dinp {
        Blas.parallelGemm(workers: workers, transA: false, transB: true, M: N, N: C, K: OC, alpha: 1,
                  A: dout, lda: OC, B: weight, ldb: OC, beta: overwriteInput ? 0 : 1, C: dinp, ldc: C)
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

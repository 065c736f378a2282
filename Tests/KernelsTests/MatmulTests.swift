// Matmul kernels and the BLAS wrapper against a Double triple-loop reference and finite differences.
import XCTest
import TestSupport
@testable import Kernels

/// Double reference: out[N,OC] = x[N,C] · W, W stored [C,OC], or [OC,C] and transposed when `transposed`.
private func refMatmul(_ x: [Double], _ w: [Double], _ N: Int, _ C: Int, _ OC: Int, transposed: Bool) -> [Double] {
    var out = [Double](repeating: 0, count: N * OC)
    for n in 0 ..< N {
        for o in 0 ..< OC {
            var s = 0.0
            for c in 0 ..< C { s += x[n * C + c] * (transposed ? w[o * C + c] : w[c * OC + o]) }
            out[n * OC + o] = s
        }
    }
    return out
}

final class MatmulTests: XCTestCase {
    let N = 3, C = 5, OC = 4
    // Forward: Float sgemm vs Double over C = 5 terms of O(1) products.
    let fwdRtol = 1e-5, fwdAtol = 1e-6
    // Backward vs central differences (h = 1e-6) of the Double reference.
    let bwdRtol = 1e-4, bwdAtol = 1e-5

    func testGemmAllTransposeCombinationsWithStrides() {
        var rng = TestRNG(seed: 1)
        let M = 3, Nn = 4, K = 5, alpha: Float = 0.5, beta: Float = 2
        for transA in [false, true] {
            for transB in [false, true] {
                // padded leading dimensions exercise the strided addressing used by attention
                let lda = (transA ? M : K) + 2, ldb = (transB ? K : Nn) + 1, ldc = Nn + 3
                let A = rng.floats((transA ? K : M) * lda), B = rng.floats((transB ? Nn : K) * ldb)
                let C0 = rng.floats(M * ldc)
                var Cm = C0
                Blas.gemm(transA: transA, transB: transB, M: M, N: Nn, K: K, alpha: alpha,
                          A: A, lda: lda, B: B, ldb: ldb, beta: beta, C: &Cm, ldc: ldc)
                var expected = toDouble(C0)
                for i in 0 ..< M {
                    for j in 0 ..< Nn {
                        var s = 0.0
                        for l in 0 ..< K {
                            let a = Double(transA ? A[l * lda + i] : A[i * lda + l])
                            let b = Double(transB ? B[j * ldb + l] : B[l * ldb + j])
                            s += a * b
                        }
                        expected[i * ldc + j] = Double(alpha) * s + Double(beta) * Double(C0[i * ldc + j])
                    }
                }
                // padding columns of C (j >= Nn) must be untouched: expected keeps C0 there
                assertClose(Cm, expected, rtol: fwdRtol, atol: fwdAtol, "transA \(transA) transB \(transB)")
            }
        }
    }

    func testGemmBetaZeroOverwritesNaNAndEmptyK() {
        let A: [Float] = [1, 2], B: [Float] = [3, 4]
        var Cm: [Float] = [.nan]
        Blas.gemm(transA: false, transB: false, M: 1, N: 1, K: 2, alpha: 1, A: A, lda: 2, B: B, ldb: 1,
                  beta: 0, C: &Cm, ldc: 1)
        XCTAssertEqual(Cm, [11])
        var C2: [Float] = [5, 6]
        Blas.gemm(transA: false, transB: false, M: 1, N: 2, K: 0, alpha: 1, A: A, lda: 1, B: B, ldb: 2,
                  beta: 0.5, C: &C2, ldc: 2)
        XCTAssertEqual(C2, [2.5, 3])
    }

    func testBlasRuntimeQueries() {
        XCTAssertFalse(Blas.coreName.isEmpty)
        let saved = Blas.numThreads
        XCTAssertGreaterThanOrEqual(saved, 1)
        Blas.numThreads = 1
        XCTAssertEqual(Blas.numThreads, 1)
        Blas.numThreads = saved
        XCTAssertEqual(Blas.numThreads, saved)
    }

    func testMatmulForwardAndAccumulate() {
        var rng = TestRNG(seed: 2)
        let x = rng.floats(N * C), w = rng.floats(C * OC)
        let ref = refMatmul(toDouble(x), toDouble(w), N, C, OC, transposed: false)
        var out = [Float](repeating: .nan, count: N * OC)   // overwrite must ignore prior contents
        matmulForward(&out, x, w, N, C, OC)
        assertClose(out, ref, rtol: fwdRtol, atol: fwdAtol)
        let base = rng.floats(N * OC)
        var acc = base
        matmulForward(&acc, x, w, N, C, OC, accumulate: true)
        assertClose(acc, add(toDouble(base), ref), rtol: fwdRtol, atol: fwdAtol, "accumulate")
    }

    func testMatmulBackwardFiniteDifference() {
        var rng = TestRNG(seed: 3)
        let x = rng.floats(N * C), w = rng.floats(C * OC), dout = rng.floats(N * OC)
        let xd = toDouble(x), wd = toDouble(w), dd = toDouble(dout)
        // L = Σ dout ⊙ (x · W)
        let gx = finiteDifference(xd) { dot(refMatmul($0, wd, self.N, self.C, self.OC, transposed: false), dd) }
        let gw = finiteDifference(wd) { dot(refMatmul(xd, $0, self.N, self.C, self.OC, transposed: false), dd) }
        // pre-filled gradients check the += contract
        let dx0 = rng.floats(N * C), dw0 = rng.floats(C * OC)
        var dx = dx0, dw = dw0
        matmulBackward(&dx, &dw, dout, x, w, N, C, OC)
        assertClose(dx, add(toDouble(dx0), gx), rtol: bwdRtol, atol: bwdAtol, "dinp")
        assertClose(dw, add(toDouble(dw0), gw), rtol: bwdRtol, atol: bwdAtol, "dweight")

        // nil skips the corresponding product and leaves the other unchanged
        var dxOnly = [Float](repeating: 0, count: N * C)
        matmulBackward(&dxOnly, nil, dout, x, w, N, C, OC)
        assertClose(dxOnly, gx, rtol: bwdRtol, atol: bwdAtol, "dinp only")
        var dwOnly = [Float](repeating: 0, count: C * OC)
        matmulBackward(nil, &dwOnly, dout, x, w, N, C, OC)
        assertClose(dwOnly, gw, rtol: bwdRtol, atol: bwdAtol, "dweight only")
    }

    func testMatmulTransposedForward() {
        var rng = TestRNG(seed: 4)
        let x = rng.floats(N * C), w = rng.floats(OC * C)
        var out = [Float](repeating: .nan, count: N * OC)
        matmulTransposedForward(&out, x, w, N, C, OC)
        assertClose(out, refMatmul(toDouble(x), toDouble(w), N, C, OC, transposed: true), rtol: fwdRtol, atol: fwdAtol)
    }

    func testMatmulTransposedBackwardFiniteDifference() {
        var rng = TestRNG(seed: 5)
        let x = rng.floats(N * C), w = rng.floats(OC * C), dout = rng.floats(N * OC)
        let xd = toDouble(x), wd = toDouble(w), dd = toDouble(dout)
        let gx = finiteDifference(xd) { dot(refMatmul($0, wd, self.N, self.C, self.OC, transposed: true), dd) }
        let gw = finiteDifference(wd) { dot(refMatmul(xd, $0, self.N, self.C, self.OC, transposed: true), dd) }
        let dx0 = rng.floats(N * C), dw0 = rng.floats(OC * C)
        var dx = dx0, dw = dw0
        matmulTransposedBackward(&dx, &dw, dout, x, w, N, C, OC)
        assertClose(dx, add(toDouble(dx0), gx), rtol: bwdRtol, atol: bwdAtol, "dinp")
        assertClose(dw, add(toDouble(dw0), gw), rtol: bwdRtol, atol: bwdAtol, "dweight")

        var dxOnly = [Float](repeating: 0, count: N * C)
        matmulTransposedBackward(&dxOnly, nil, dout, x, w, N, C, OC)
        assertClose(dxOnly, gx, rtol: bwdRtol, atol: bwdAtol, "dinp only")
        var dwOnly = [Float](repeating: 0, count: OC * C)
        matmulTransposedBackward(nil, &dwOnly, dout, x, w, N, C, OC)
        assertClose(dwOnly, gw, rtol: bwdRtol, atol: bwdAtol, "dweight only")
    }

    /// Products split over threads by rows (C taller than wide) or columns (wider), in every transpose case,
    /// with beta 0 and 1 and sizes that are not multiples of the 16-row slabs: the same bits as one product
    /// on one OpenBLAS thread (each element is summed over K as in the whole product), and a Double reference
    /// to 1e-4 relative.
    func testParallelGemmIsTheSingleProduct() {
        let saved = Blas.numThreads
        Blas.numThreads = 1                                   // OpenBLAS on one thread for the reference
        defer { Blas.numThreads = saved }
        var rng = TestRNG(seed: 77)
        for (M, N, K) in [(301, 67, 259), (53, 517, 211)] {
            XCTAssertGreaterThanOrEqual(M * N * K, 1 << 22, "the product must be large enough to split")
            for transA in [false, true] {
                for transB in [false, true] {
                    for beta: Float in [0, 1] {
                        let A = rng.floats(M * K), B = rng.floats(K * N), C0 = rng.floats(M * N)
                        let lda = transA ? M : K, ldb = transB ? K : N
                        var one = C0, three = C0
                        Blas.gemm(transA: transA, transB: transB, M: M, N: N, K: K, alpha: 0.75, A: A, lda: lda,
                                  B: B, ldb: ldb, beta: beta, C: &one, ldc: N)
                        Blas.parallelGemm(workers: 3, transA: transA, transB: transB, M: M, N: N, K: K, alpha: 0.75,
                                          A: A, lda: lda, B: B, ldb: ldb, beta: beta, C: &three, ldc: N)
                        let label = "M \(M) N \(N) K \(K) transA \(transA) transB \(transB) beta \(beta)"
                        XCTAssertEqual(one.map(\.bitPattern), three.map(\.bitPattern), label)
                        var ref = [Double](repeating: 0, count: M * N)
                        for i in 0 ..< M {
                            for j in 0 ..< N {
                                var acc = 0.0
                                for k in 0 ..< K {
                                    let a = transA ? A[k * lda + i] : A[i * lda + k]
                                    let b = transB ? B[j * ldb + k] : B[k * ldb + j]
                                    acc += Double(a) * Double(b)
                                }
                                ref[i * N + j] = 0.75 * acc + Double(beta) * Double(C0[i * N + j])
                            }
                        }
                        assertClose(three, ref, rtol: 1e-4, atol: 1e-4, label)
                    }
                }
            }
        }
    }
}

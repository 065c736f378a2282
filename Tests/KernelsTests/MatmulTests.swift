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

    /// The rank's threads are moe-dist's own: setting them leaves OpenBLAS on one thread, and OpenBLAS's own
    /// count (raised only by the benchmark) reads back from the library.
    func testBlasRuntimeQueries() {
        XCTAssertFalse(Blas.coreName.isEmpty)
        let saved = Blas.numThreads
        XCTAssertGreaterThanOrEqual(saved, 1)
        Blas.numThreads = 3
        XCTAssertEqual(Blas.numThreads, 3)
        XCTAssertEqual(Blas.libraryThreads, 1, "setting the rank's threads leaves OpenBLAS on one thread")
        Blas.libraryThreads = 2
        XCTAssertEqual(Blas.libraryThreads, 2)
        Blas.parallel(workers: 2) { _ in XCTAssertEqual(Blas.libraryThreads, 1, "OpenBLAS on one thread in a region") }
        XCTAssertEqual(Blas.libraryThreads, 2, "a region restores the count it found")
        Blas.numThreads = saved
        XCTAssertEqual(Blas.numThreads, saved)
        XCTAssertEqual(Blas.libraryThreads, 1)
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
        matmulForwardAdding(&acc, x, w, N, C, OC)
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
    /// with alpha 1 / beta 0 (OpenBLAS's direct path for small products) and alpha 0.75 / beta 1, padded
    /// leading dimensions (a strided block, as attention's heads are) and sizes that are not multiples of the
    /// 16-row slabs: against a Double reference to 1e-4 relative, the padding left untouched, and the same bits
    /// on a second run (the rounding of a slab may differ from the whole product's in the last bits: OpenBLAS
    /// picks its kernel by size).
    func testParallelGemmMatchesTheReference() {
        let saved = Blas.numThreads
        Blas.numThreads = 1
        defer { Blas.numThreads = saved }
        var rng = TestRNG(seed: 77)
        for (M, N, K) in [(301, 67, 259), (53, 517, 211)] {
            XCTAssertGreaterThanOrEqual(M * N * K, 1 << 22, "the product must be large enough to split")
            for transA in [false, true] {
                for transB in [false, true] {
                    for (alpha, beta): (Float, Float) in [(1, 0), (0.75, 1)] {
                        let pad = 5
                        let lda = (transA ? M : K) + pad, ldb = (transB ? K : N) + pad, ldc = N + pad
                        let A = rng.floats((transA ? K : M) * lda), B = rng.floats((transB ? N : K) * ldb)
                        let C0 = rng.floats(M * ldc)
                        var C = C0, again = C0
                        Blas.parallelGemm(workers: 3, transA: transA, transB: transB, M: M, N: N, K: K, alpha: alpha,
                                          A: A, lda: lda, B: B, ldb: ldb, beta: beta, C: &C, ldc: ldc)
                        Blas.parallelGemm(workers: 3, transA: transA, transB: transB, M: M, N: N, K: K, alpha: alpha,
                                          A: A, lda: lda, B: B, ldb: ldb, beta: beta, C: &again, ldc: ldc)
                        let label = "M \(M) N \(N) K \(K) transA \(transA) transB \(transB) alpha \(alpha) beta \(beta)"
                        XCTAssertEqual(C.map(\.bitPattern), again.map(\.bitPattern), "\(label): not deterministic")
                        var got: [Float] = [], ref: [Double] = []
                        for i in 0 ..< M {
                            for j in 0 ..< N {
                                var acc = 0.0
                                for k in 0 ..< K {
                                    let a = transA ? A[k * lda + i] : A[i * lda + k]
                                    let b = transB ? B[j * ldb + k] : B[k * ldb + j]
                                    acc += Double(a) * Double(b)
                                }
                                got.append(C[i * ldc + j])
                                ref.append(Double(alpha) * acc + Double(beta) * Double(C0[i * ldc + j]))
                            }
                            for j in N ..< ldc { XCTAssertEqual(C[i * ldc + j], C0[i * ldc + j], "\(label): padding written") }
                        }
                        assertClose(got, ref, rtol: 1e-4, atol: 1e-4, label)
                    }
                }
            }
        }
    }
}

// PackedMatmul (the experts' packed products) against a Double triple-loop reference, and the property the
// model relies on: a row's result does not depend on the other rows of the product or on the thread count.
import XCTest
@testable import Kernels

final class PackedMatmulTests: XCTestCase {
    override func setUpWithError() throws {
        try XCTSkipUnless(PackedMatmul.isAvailable, "PackedMatmul needs AVX-512; this CPU runs the BLAS products")
    }

    /// out (+)= x[M,K] · B with B [K,N] given as W [K,N] (`transposed` false) or as W [N,K] (true).
    private func run(_ x: [Float], _ w: [Float], M: Int, K: Int, N: Int, transposed: Bool, out: [Float]? = nil,
                     workers: Int = 1) -> [Float] {
        var packed = [Float](repeating: .nan, count: PackedMatmul.packedFloats(K: K, N: N))
        packed.withUnsafeMutableBufferPointer { p in
            if transposed { PackedMatmul.packTransposed(p.baseAddress!, w, K: K, N: N) }
            else { PackedMatmul.pack(p.baseAddress!, w, K: K, N: N) }
        }
        var y = out ?? [Float](repeating: .nan, count: M * N)   // NaN: overwriting must ignore it
        PackedMatmul.multiply(&y, x, packed, M: M, K: K, N: N, accumulate: out != nil, workers: workers)
        return y
    }

    /// Shapes cover whole and partial 6-row tiles and 64-column panels, K = 1 and the experts' sizes.
    func testProductsMatchTheDoubleReference() {
        var rng = TestRNG(seed: 11)
        for (M, K, N) in [(1, 1, 1), (5, 3, 17), (6, 8, 64), (13, 37, 130), (102, 96, 200), (7, 384, 64)] {
            for transposed in [false, true] {
                for accumulate in [false, true] {
                    let x = rng.floats(M * K), w = rng.floats(K * N), c0 = rng.floats(M * N)
                    let y = run(x, w, M: M, K: K, N: N, transposed: transposed, out: accumulate ? c0 : nil)
                    for i in 0 ..< M {
                        for j in 0 ..< N {
                            var s = accumulate ? Double(c0[i * N + j]) : 0, mag = abs(s)
                            for k in 0 ..< K {
                                let b = Double(transposed ? w[j * K + k] : w[k * N + j])
                                s += Double(x[i * K + k]) * b; mag += abs(Double(x[i * K + k]) * b)
                            }
                            // float32 sums of K terms: |error| <= K·2⁻²⁴·Σ|terms| (1e-6 per term is looser)
                            XCTAssertEqual(Double(y[i * N + j]), s, accuracy: 1e-6 * Double(K + 1) * max(mag, 1),
                                           "M \(M) K \(K) N \(N) transposed \(transposed) (\(i), \(j))")
                        }
                    }
                }
            }
        }
    }

    /// Each row comes out with the same bits whether it is multiplied alone, at any position of a larger
    /// product, or with the columns split over threads: experts run on rows that routing groups differently
    /// on each world size, and the model promises world-size invariance.
    func testARowsBitsDoNotDependOnTheOtherRowsOrTheThreads() {
        var rng = TestRNG(seed: 12)
        let M = 61, K = 400, N = 650      // large enough for 3 threads (2²² multiply-adds each)
        let x = rng.floats(M * K), w = rng.floats(K * N)
        let whole = run(x, w, M: M, K: K, N: N, transposed: false)
        let threaded = run(x, w, M: M, K: K, N: N, transposed: false, workers: 3)
        XCTAssertEqual(whole, threaded)
        for i in [0, 5, 6, 17, 60] {
            let alone = run(Array(x[i * K ..< (i + 1) * K]), w, M: 1, K: K, N: N, transposed: false)
            XCTAssertEqual(alone, Array(whole[i * N ..< (i + 1) * N]), "row \(i)")
        }
        let tail = run(Array(x[11 * K ..< M * K]), w, M: M - 11, K: K, N: N, transposed: false)
        XCTAssertEqual(tail, Array(whole[11 * N ..< M * N]))
    }
}

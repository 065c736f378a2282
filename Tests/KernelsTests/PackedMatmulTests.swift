// PackedMatmul (the experts' packed products) against a Double triple-loop reference, and the property the
// model relies on: a row's result does not depend on the other rows of the product or on the thread count.
// Every kernel this CPU runs is tested (an AVX-512 machine tests the AVX2 kernel too); only a CPU without
// AVX2 + FMA skips.
import XCTest
import TestSupport
@testable import Kernels

final class PackedMatmulTests: XCTestCase {
    override func setUpWithError() throws {
        guard PackedMatmul.isAvailable else { throw missingHardware("PackedMatmul needs AVX2 + FMA; this CPU runs the BLAS products") }
    }

    /// out (+)= x[M,K] · B with B [K,N] given as W [K,N] (`transposed` false) or as W [N,K] (true).
    private func run(_ kernel: PackedMatmul.Kernel, _ x: [Float], _ w: [Float], M: Int, K: Int, N: Int,
                     transposed: Bool, out: [Float]? = nil, workers: Int = 1) -> [Float] {
        var packed = [Float](repeating: .nan, count: PackedMatmul.packedFloats(K: K, N: N, kernel: kernel))
        packed.withUnsafeMutableBufferPointer { p in
            if transposed { PackedMatmul.packTransposed(p.baseAddress!, w, K: K, N: N, kernel: kernel) }
            else { PackedMatmul.pack(p.baseAddress!, w, K: K, N: N, kernel: kernel) }
        }
        var y = out ?? [Float](repeating: .nan, count: M * N)   // NaN: overwriting must ignore it
        if out != nil { PackedMatmul.multiplyAdding(&y, x, packed, M: M, K: K, N: N, kernel: kernel, workers: workers) }
        else { PackedMatmul.multiply(&y, x, packed, M: M, K: K, N: N, kernel: kernel, workers: workers) }
        return y
    }

    func testEveryKernelThisCPUHasRuns() {
        XCTAssertEqual(PackedMatmul.runnableKernels.last, PackedMatmul.kernel(for: VectorKernels.level))
        XCTAssertEqual(PackedMatmul.runnableKernels.first, .avx2)
        XCTAssertEqual(PackedMatmul.panel(.avx2), 16)
        XCTAssertEqual(PackedMatmul.panel(.avx512), 64)
    }

    /// Shapes cover whole and partial 6-row tiles and 16- and 64-column panels, K = 1 and the experts' sizes.
    func testProductsMatchTheDoubleReference() {
        for kernel in PackedMatmul.runnableKernels { productsMatchTheDoubleReference(kernel) }
    }

    private func productsMatchTheDoubleReference(_ kernel: PackedMatmul.Kernel) {
        var rng = TestRNG(seed: 11)
        for (M, K, N) in [(1, 1, 1), (5, 3, 17), (6, 8, 64), (13, 37, 130), (102, 96, 200), (7, 384, 64), (4, 5, 9)] {
            for transposed in [false, true] {
                for accumulate in [false, true] {
                    let x = rng.floats(M * K), w = rng.floats(K * N), c0 = rng.floats(M * N)
                    let y = run(kernel, x, w, M: M, K: K, N: N, transposed: transposed, out: accumulate ? c0 : nil)
                    for i in 0 ..< M {
                        for j in 0 ..< N {
                            var s = accumulate ? Double(c0[i * N + j]) : 0, mag = abs(s)
                            for k in 0 ..< K {
                                let b = Double(transposed ? w[j * K + k] : w[k * N + j])
                                s += Double(x[i * K + k]) * b; mag += abs(Double(x[i * K + k]) * b)
                            }
                            // float32 sums of K terms: |error| <= K·2⁻²⁴·Σ|terms| (1e-6 per term is looser)
                            XCTAssertEqual(Double(y[i * N + j]), s, accuracy: 1e-6 * Double(K + 1) * max(mag, 1),
                                           "\(kernel): M \(M) K \(K) N \(N) transposed \(transposed) (\(i), \(j))")
                        }
                    }
                }
            }
        }
    }

    /// Each row comes out with the same bits whether it is multiplied alone, at any position of a larger
    /// product, or with the columns split over threads: experts run on rows that routing groups differently
    /// on each world size, and the model promises world-size invariance.
    /// Every kernel does the same operations per element (one fused multiply-add per k, in order), so they
    /// agree to the bit: a run resumed on a CPU of the other level continues exactly.
    func testARowsBitsDoNotDependOnTheOtherRowsTheThreadsOrTheKernel() {
        var rng = TestRNG(seed: 12)
        let M = 61, K = 400, N = 650      // large enough for 3 threads (2²² multiply-adds each)
        let x = rng.floats(M * K), w = rng.floats(K * N), c0 = rng.floats(M * N)
        var first: [Float]?
        for kernel in PackedMatmul.runnableKernels {
            let whole = run(kernel, x, w, M: M, K: K, N: N, transposed: false)
            let threaded = run(kernel, x, w, M: M, K: K, N: N, transposed: false, workers: 3)
            XCTAssertEqual(whole, threaded, "\(kernel)")
            for i in [0, 5, 6, 17, 60] {
                let alone = run(kernel, Array(x[i * K ..< (i + 1) * K]), w, M: 1, K: K, N: N, transposed: false)
                XCTAssertEqual(alone, Array(whole[i * N ..< (i + 1) * N]), "\(kernel): row \(i)")
            }
            let tail = run(kernel, Array(x[11 * K ..< M * K]), w, M: M - 11, K: K, N: N, transposed: false)
            XCTAssertEqual(tail, Array(whole[11 * N ..< M * N]), "\(kernel)")
            let added = run(kernel, x, w, M: M, K: K, N: N, transposed: true, out: c0, workers: 2)
            if let first {
                XCTAssertEqual(whole + added, first, "\(kernel) against \(PackedMatmul.runnableKernels[0])")
            } else {
                first = whole + added
            }
        }
    }
}

// Fused softmax cross-entropy against a Double reference, finite differences and in-place use.
import XCTest
import TestSupport
@testable import Kernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Double reference: loss[i] = log Σ_j exp(z[i,j]) − z[i, y_i], with the row maximum factored out.
private func refLosses(_ z: [Double], _ y: [Int32], _ N: Int, _ V: Int) -> [Double] {
    (0 ..< N).map { i in
        let row = Array(z[(i * V) ..< ((i + 1) * V)])
        let m = row.max()!
        return m + log(row.reduce(0) { $0 + exp($1 - m) }) - row[Int(y[i])]
    }
}

final class CrossEntropyTests: XCTestCase {
    let N = 4, V = 7
    let targets: [Int32] = [0, 6, 3, 3]

    /// Random logits; row 2 is shifted by +1000 so an unstabilised exp would overflow.
    private func logits(_ seed: UInt64) -> [Float] {
        var rng = TestRNG(seed: seed)
        var z = rng.floats(N * V, scale: 3)
        for j in 0 ..< V { z[2 * V + j] += 1000 }
        return z
    }

    func testLossesAndSumMatchReference() {
        let z = logits(60)
        var losses = [Float](repeating: .nan, count: N)
        let total = crossEntropyLossAndGradient(nil, &losses, z, targets, N, V, gradScale: 1)
        let ref = refLosses(toDouble(z), targets, N, V)
        // Float exp/log over V = 7 terms; atol covers the log of a sum near 1
        assertClose(losses, ref, rtol: 1e-5, atol: 1e-5, "losses")
        assertClose(total, ref.reduce(0, +), rtol: 1e-5, atol: 1e-5, "sum")
        XCTAssertTrue(losses.allSatisfy { $0.isFinite })
        // asking for the gradient does not change the losses
        var d = [Float](repeating: 0, count: N * V), lossesWithGrad = [Float](repeating: 0, count: N)
        let totalWithGrad = crossEntropyLossAndGradient(&d, &lossesWithGrad, z, targets, N, V, gradScale: 1)
        XCTAssertEqual(lossesWithGrad, losses)
        XCTAssertEqual(totalWithGrad, total)
    }

    func testGradientFiniteDifference() {
        let z = logits(61)
        let scale: Float = 0.25   // e.g. 1 / N for a mean
        let g = finiteDifference(toDouble(z)) { Double(scale) * refLosses($0, self.targets, self.N, self.V).reduce(0, +) }
        var d = [Float](repeating: .nan, count: N * V)   // OVERWRITE: prior contents ignored
        var losses = [Float](repeating: 0, count: N)
        _ = crossEntropyLossAndGradient(&d, &losses, z, targets, N, V, gradScale: scale)
        // Float softmax vs central differences (h = 1e-6) of the Double reference
        assertClose(d, g, rtol: 1e-4, atol: 1e-5)
    }

    func testInPlaceMatchesOutOfPlace() {
        let z = logits(62)
        var dOut = [Float](repeating: 0, count: N * V), lossesOut = [Float](repeating: 0, count: N)
        let totalOut = crossEntropyLossAndGradient(&dOut, &lossesOut, z, targets, N, V, gradScale: 0.5)
        var buf = z, lossesIn = [Float](repeating: 0, count: N)
        let totalIn = buf.withUnsafeMutableBufferPointer { p in
            crossEntropyLossAndGradient(p.baseAddress!, &lossesIn, UnsafePointer(p.baseAddress!), targets, N, V, gradScale: 0.5)
        }
        XCTAssertEqual(buf, dOut, "in-place gradient differs")
        XCTAssertEqual(lossesIn, lossesOut, "in-place losses differ")
        XCTAssertEqual(totalIn, totalOut)
    }

    /// Rows split over threads: losses, gradients and their sum bit for bit as on one thread (ranks of one
    /// run may have different thread counts); checked against the Double reference too (more rows than the
    /// threshold of 16 per chunk).
    func testThreadsGiveTheSameRows() {
        let n = 203, v = 301
        var rng = TestRNG(seed: 63)
        let z = rng.floats(n * v, scale: 3)
        let y = (0 ..< n).map { Int32(($0 * 37) % v) }
        var d1 = [Float](repeating: 0, count: n * v), l1 = [Float](repeating: 0, count: n)
        let t1 = crossEntropyLossAndGradient(&d1, &l1, z, y, n, v, gradScale: 0.5)
        for workers in [2, 3, 7] {
            var d = [Float](repeating: .nan, count: n * v), l = [Float](repeating: .nan, count: n)
            let t = crossEntropyLossAndGradient(&d, &l, z, y, n, v, gradScale: 0.5, workers: workers)
            XCTAssertEqual(d.map(\.bitPattern), d1.map(\.bitPattern), "\(workers) workers: gradients")
            XCTAssertEqual(l.map(\.bitPattern), l1.map(\.bitPattern), "\(workers) workers: losses")
            XCTAssertEqual(t.bitPattern, t1.bitPattern, "\(workers) workers: sum")
            assertClose(t, refLosses(toDouble(z), y, n, v).reduce(0, +), rtol: 1e-5, atol: 1e-5, "sum vs reference")
        }
    }
}

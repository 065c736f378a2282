// RMSNorm against a Double reference and finite differences.
import XCTest
import TestSupport
@testable import Kernels

/// Double reference: y[n,c] = x[n,c] / sqrt(mean_c x² + eps) · g[c].
private func refRMSNorm(_ x: [Double], _ g: [Double], _ N: Int, _ C: Int, eps: Double) -> [Double] {
    var y = [Double](repeating: 0, count: N * C)
    for n in 0 ..< N {
        var ss = 0.0
        for c in 0 ..< C { ss += x[n * C + c] * x[n * C + c] }
        let r = 1 / (ss / Double(C) + eps).squareRoot()
        for c in 0 ..< C { y[n * C + c] = x[n * C + c] * r * g[c] }
    }
    return y
}

final class RMSNormTests: XCTestCase {
    let eps: Float = 1e-5
    // Forward: Float vs Double, a handful of roundings per element.
    let fwdRtol = 1e-5, fwdAtol = 1e-6
    // Backward vs central differences (h = 1e-6) of the Double reference.
    let bwdRtol = 1e-4, bwdAtol = 1e-5

    // C = 7 runs only the scalar tail of the SIMD8 reductions; C = 19 runs two SIMD8 blocks plus a tail.
    func testForwardMatchesReference() {
        for C in [7, 19] { checkForward(N: 3, C: C) }
    }

    func testBackwardFiniteDifference() {
        for C in [7, 19] { checkBackward(N: 3, C: C) }
    }

    private func checkForward(N: Int, C: Int) {
        var rng = TestRNG(seed: 10 + UInt64(C))
        let x = rng.floats(N * C, scale: 2), g = rng.floats(C)
        var y = [Float](repeating: .nan, count: N * C), rstd = [Float](repeating: .nan, count: N)
        rmsnormForward(&y, &rstd, x, g, N, C, eps: eps)
        assertClose(y, refRMSNorm(toDouble(x), toDouble(g), N, C, eps: Double(eps)), rtol: fwdRtol, atol: fwdAtol, "C \(C)")
        let rstdRef: [Double] = (0 ..< N).map { n in
            let ss = (0 ..< C).reduce(0.0) { $0 + Double(x[n * C + $1]) * Double(x[n * C + $1]) }
            return 1 / (ss / Double(C) + Double(eps)).squareRoot()
        }
        assertClose(rstd, rstdRef, rtol: fwdRtol, atol: 0, "rstd, C \(C)")
    }

    private func checkBackward(N: Int, C: Int) {
        var rng = TestRNG(seed: 20 + UInt64(C))
        let x = rng.floats(N * C, scale: 2), g = rng.floats(C), dout = rng.floats(N * C)
        let xd = toDouble(x), gd = toDouble(g), dd = toDouble(dout), e = Double(eps)
        let gx = finiteDifference(xd) { dot(refRMSNorm($0, gd, N, C, eps: e), dd) }
        let gg = finiteDifference(gd) { dot(refRMSNorm(xd, $0, N, C, eps: e), dd) }
        var y = [Float](repeating: 0, count: N * C), rstd = [Float](repeating: 0, count: N)
        rmsnormForward(&y, &rstd, x, g, N, C, eps: eps)
        let dx0 = rng.floats(N * C), dg0 = rng.floats(C)   // backward adds into these
        var dx = dx0, dg = dg0
        rmsnormBackward(&dx, &dg, dout, x, g, rstd, N, C)
        assertClose(dx, add(toDouble(dx0), gx), rtol: bwdRtol, atol: bwdAtol, "dinp, C \(C)")
        assertClose(dg, add(toDouble(dg0), gg), rtol: bwdRtol, atol: bwdAtol, "dweight, C \(C)")
    }

    /// Rows (and the weight gradient's columns) split over 3 threads give the same bits as one thread; the
    /// size is above the threshold at which the kernels split (N·C ≥ 3·32768), with shares of unequal rows.
    func testThreadsGiveTheSameBits() {
        let N = 301, C = 331
        var rng = TestRNG(seed: 33)
        let x = rng.floats(N * C, scale: 2), g = rng.floats(C), dout = rng.floats(N * C)
        let dx0 = rng.floats(N * C), dg0 = rng.floats(C)
        func run(_ workers: Int) -> (y: [Float], rstd: [Float], dx: [Float], dg: [Float]) {
            var y = [Float](repeating: .nan, count: N * C), rstd = [Float](repeating: .nan, count: N)
            rmsnormForward(&y, &rstd, x, g, N, C, eps: eps, workers: workers)
            var dx = dx0, dg = dg0
            rmsnormBackward(&dx, &dg, dout, x, g, rstd, N, C, workers: workers)
            return (y, rstd, dx, dg)
        }
        XCTAssertEqual(Blas.rowWorkers(3, rows: N, width: C), 3)
        let one = run(1), three = run(3)
        XCTAssertEqual(one.y.map(\.bitPattern), three.y.map(\.bitPattern), "forward")
        XCTAssertEqual(one.rstd.map(\.bitPattern), three.rstd.map(\.bitPattern), "rstd")
        XCTAssertEqual(one.dx.map(\.bitPattern), three.dx.map(\.bitPattern), "dinp")
        XCTAssertEqual(one.dg.map(\.bitPattern), three.dg.map(\.bitPattern), "dweight")
        XCTAssertNotEqual(one.dg.map(\.bitPattern), dg0.map(\.bitPattern), "dweight unchanged")
    }
}

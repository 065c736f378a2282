// GELU and SwiGLU against Double references and finite differences.
import XCTest
import TestSupport
@testable import Kernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

private func refGelu(_ x: Double) -> Double {
    0.5 * x * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x)))
}

private func refSilu(_ x: Double) -> Double { x / (1 + exp(-x)) }

final class ActivationsTests: XCTestCase {
    // Inputs span the saturated tails as well as the curved middle.
    private func inputs(_ seed: UInt64) -> [Float] {
        var rng = TestRNG(seed: seed)
        return rng.floats(13, scale: 2) + [-12, -6, -0.5, 0, 0.5, 6, 12]
    }
    // Forward: one Float tanh/exp per element.
    let fwdRtol = 1e-5, fwdAtol = 1e-6
    // Backward vs central differences (h = 1e-6) of the Double reference.
    let bwdRtol = 1e-4, bwdAtol = 1e-5

    func testGeluForward() {
        let x = inputs(50)
        var y = [Float](repeating: .nan, count: x.count)
        geluForward(&y, x, x.count)
        assertClose(y, x.map { refGelu(Double($0)) }, rtol: fwdRtol, atol: fwdAtol)
    }

    /// The in-place backward the experts use: d(out) in, d(inp) out.
    func testGeluBackwardInPlaceFiniteDifference() {
        var rng = TestRNG(seed: 51)
        let x = inputs(52), dout = rng.floats(x.count), dd = toDouble(dout)
        let g = finiteDifference(toDouble(x)) { xs in dot(xs.map(refGelu), dd) }
        var d = dout
        geluBackwardInPlace(&d, x, x.count)
        assertClose(d, g, rtol: bwdRtol, atol: bwdAtol)
    }

    func testSwigluForward() {
        var rng = TestRNG(seed: 53)
        let a = inputs(54), b = rng.floats(a.count)
        var y = [Float](repeating: .nan, count: a.count)
        swigluForward(&y, a, b, a.count)
        assertClose(y, (0 ..< a.count).map { refSilu(Double(a[$0])) * Double(b[$0]) }, rtol: fwdRtol, atol: fwdAtol)
    }

    /// The in-place backward the experts use: d(out) in, d(a) out in the same buffer, d(b) overwritten.
    func testSwigluBackwardInPlaceFiniteDifference() {
        var rng = TestRNG(seed: 55)
        let a = inputs(56), b = rng.floats(a.count), dout = rng.floats(a.count)
        let ad = toDouble(a), bd = toDouble(b), dd = toDouble(dout)
        let n = a.count
        let ga = finiteDifference(ad) { xs in dot((0 ..< n).map { refSilu(xs[$0]) * bd[$0] }, dd) }
        let gb = finiteDifference(bd) { xs in dot((0 ..< n).map { refSilu(ad[$0]) * xs[$0] }, dd) }
        var d = dout, db = [Float](repeating: .nan, count: n)
        swigluBackwardInPlace(&d, &db, a, b, n)
        assertClose(d, ga, rtol: bwdRtol, atol: bwdAtol, "da")
        assertClose(db, gb, rtol: bwdRtol, atol: bwdAtol, "db")
    }
}

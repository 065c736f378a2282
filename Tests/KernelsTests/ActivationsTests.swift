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

    func testGeluBackwardFiniteDifference() {
        var rng = TestRNG(seed: 51)
        let x = inputs(52), dout = rng.floats(x.count), dd = toDouble(dout)
        let g = finiteDifference(toDouble(x)) { xs in dot(xs.map(refGelu), dd) }
        let d0 = rng.floats(x.count)
        var dx = d0
        geluBackward(&dx, x, dout, x.count)
        assertClose(dx, add(toDouble(d0), g), rtol: bwdRtol, atol: bwdAtol)
    }

    func testSwigluForward() {
        var rng = TestRNG(seed: 53)
        let a = inputs(54), b = rng.floats(a.count)
        var y = [Float](repeating: .nan, count: a.count)
        swigluForward(&y, a, b, a.count)
        assertClose(y, (0 ..< a.count).map { refSilu(Double(a[$0])) * Double(b[$0]) }, rtol: fwdRtol, atol: fwdAtol)
    }

    func testSwigluBackwardFiniteDifference() {
        var rng = TestRNG(seed: 55)
        let a = inputs(56), b = rng.floats(a.count), dout = rng.floats(a.count)
        let ad = toDouble(a), bd = toDouble(b), dd = toDouble(dout)
        let n = a.count
        let ga = finiteDifference(ad) { xs in dot((0 ..< n).map { refSilu(xs[$0]) * bd[$0] }, dd) }
        let gb = finiteDifference(bd) { xs in dot((0 ..< n).map { refSilu(ad[$0]) * xs[$0] }, dd) }
        let da0 = rng.floats(n), db0 = rng.floats(n)
        var da = da0, db = db0
        swigluBackward(&da, &db, dout, a, b, n)
        assertClose(da, add(toDouble(da0), ga), rtol: bwdRtol, atol: bwdAtol, "da")
        assertClose(db, add(toDouble(db0), gb), rtol: bwdRtol, atol: bwdAtol, "db")
    }

    /// The in-place backward kernels the experts use: against finite differences, and bit for bit against
    /// the accumulating kernels run into zero gradients.
    func testInPlaceBackwardsMatchFiniteDifferencesAndTheAccumulatingKernels() {
        var rng = TestRNG(seed: 57)
        let x = inputs(58), dout = rng.floats(x.count), n = x.count
        var d = dout
        geluBackwardInPlace(&d, x, n)
        let g = finiteDifference(toDouble(x)) { xs in dot(xs.map(refGelu), toDouble(dout)) }
        assertClose(d, g, rtol: bwdRtol, atol: bwdAtol, "gelu in place")
        var acc = [Float](repeating: 0, count: n)
        geluBackward(&acc, x, dout, n)
        XCTAssertEqual(d, acc, "gelu: in place = accumulated into zero")

        let b = rng.floats(n)
        var da = dout, db = [Float](repeating: .nan, count: n)
        swigluBackwardInPlace(&da, &db, x, b, n)
        var da0 = [Float](repeating: 0, count: n), db0 = [Float](repeating: 0, count: n)
        swigluBackward(&da0, &db0, dout, x, b, n)
        XCTAssertEqual(da, da0, "swiglu da: in place = accumulated into zero")
        XCTAssertEqual(db, db0, "swiglu db: overwritten = accumulated into zero")
    }
}

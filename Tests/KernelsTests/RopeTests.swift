// Rotary embedding against a Double reference, finite differences, and the adjoint identity.
import XCTest
import TestSupport
@testable import Kernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Double reference of SPEC section 3's rotate-half RoPE on x[B*T, H*dh], angles computed from scratch.
private func refRope(_ x: [Double], _ B: Int, _ T: Int, _ H: Int, _ dh: Int, base: Double) -> [Double] {
    var y = x
    let C = H * dh, half = dh / 2
    for b in 0 ..< B {
        for t in 0 ..< T {
            for h in 0 ..< H {
                for j in 0 ..< half {
                    let theta = Double(t) * pow(base, -2 * Double(j) / Double(dh))
                    let i1 = (b * T + t) * C + h * dh + j, i2 = i1 + half
                    y[i1] = x[i1] * cos(theta) - x[i2] * sin(theta)
                    y[i2] = x[i2] * cos(theta) + x[i1] * sin(theta)
                }
            }
        }
    }
    return y
}

final class RopeTests: XCTestCase {
    let B = 2, T = 5, H = 2, dh = 6
    var C: Int { H * dh }
    // cos/sin stored as Float, rotation of O(1) values: a few Float roundings.
    let rtol = 1e-5, atol = 1e-6

    func testTableValues() {
        let table = RopeTable(seqLen: 7, headDim: 8, base: 10000)
        XCTAssertEqual(table.seqLen, 7)
        XCTAssertEqual(table.headDim, 8)
        var c = [Double](), s = [Double]()
        for t in 0 ..< 7 {
            for j in 0 ..< 4 {
                let theta = Double(t) / pow(10000, Double(2 * j) / 8)
                c.append(cos(theta)); s.append(sin(theta))
            }
        }
        assertClose(table.cos, c, rtol: 0, atol: 1e-7, "cos")
        assertClose(table.sin, s, rtol: 0, atol: 1e-7, "sin")
    }

    func testForwardMatchesReference() {
        for base in [10000.0, 3.0] {   // base 3 gives large angles in every frequency
            var rng = TestRNG(seed: 30)
            let table = RopeTable(seqLen: T + 2, headDim: dh, base: base)   // a longer table is allowed
            let x = rng.floats(B * T * C)
            var y = x
            ropeForwardInPlace(&y, table, B, T, C, H)
            assertClose(y, refRope(toDouble(x), B, T, H, dh, base: base), rtol: rtol, atol: atol, "base \(base)")
            // position 0 is the identity
            for b in 0 ..< B { XCTAssertEqual(Array(y[(b * T * C) ..< (b * T * C + C)]), Array(x[(b * T * C) ..< (b * T * C + C)])) }
        }
    }

    func testBackwardFiniteDifference() {
        var rng = TestRNG(seed: 31)
        let base = 3.0
        let table = RopeTable(seqLen: T, headDim: dh, base: base)
        let x = rng.floats(B * T * C), dout = rng.floats(B * T * C)
        let dd = toDouble(dout)
        let g = finiteDifference(toDouble(x)) { dot(refRope($0, self.B, self.T, self.H, self.dh, base: base), dd) }
        var dx = dout
        ropeBackwardInPlace(&dx, table, B, T, C, H)
        assertClose(dx, g, rtol: 1e-4, atol: 1e-5)
    }

    /// ropeBackwardInPlace is the exact transpose of ropeForwardInPlace: <rope(x), y> == <x, ropeBackwardInPlace(y)>.
    func testBackwardIsTransposeOfForward() {
        var rng = TestRNG(seed: 32)
        let table = RopeTable(seqLen: T, headDim: dh, base: 10000)
        let x = rng.floats(B * T * C), y = rng.floats(B * T * C)
        var rx = x, ry = y
        ropeForwardInPlace(&rx, table, B, T, C, H)
        ropeBackwardInPlace(&ry, table, B, T, C, H)
        let lhs = dot(toDouble(rx), toDouble(y)), rhs = dot(toDouble(x), toDouble(ry))
        assertClose(lhs, rhs, rtol: 1e-5, atol: 1e-5, "<rope(x), y> vs <x, ropeᵀ(y)>")
        // and backward undoes forward (a rotation's transpose is its inverse)
        var back = rx
        ropeBackwardInPlace(&back, table, B, T, C, H)
        assertClose(back, toDouble(x), rtol: 1e-5, atol: 1e-6, "ropeᵀ(rope(x)) = x")
    }

    /// Rows split over 3 threads (7·59 rows in shares of 137-138, so sequences are cut mid-way) give the same bits as
    /// one thread, forward and backward; the size is above the threshold at which the kernel splits.
    func testThreadsGiveTheSameBits() {
        let B = 7, T = 59, H = 4, dh = 64, C = H * dh
        var rng = TestRNG(seed: 34)
        let table = RopeTable(seqLen: T, headDim: dh, base: 10000)
        let x = rng.floats(B * T * C)
        XCTAssertEqual(Blas.rowWorkers(3, rows: B * T, width: C), 3)
        var f1 = x, f3 = x
        ropeForwardInPlace(&f1, table, B, T, C, H)
        ropeForwardInPlace(&f3, table, B, T, C, H, workers: 3)
        XCTAssertEqual(f1.map(\.bitPattern), f3.map(\.bitPattern), "forward")
        XCTAssertNotEqual(f1.map(\.bitPattern), x.map(\.bitPattern))
        var b1 = x, b3 = x
        ropeBackwardInPlace(&b1, table, B, T, C, H)
        ropeBackwardInPlace(&b3, table, B, T, C, H, workers: 3)
        XCTAssertEqual(b1.map(\.bitPattern), b3.map(\.bitPattern), "backward")
    }
}

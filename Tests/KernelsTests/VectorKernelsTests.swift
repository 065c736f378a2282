// The C element-wise kernels (CVectorKernels): every vector level this machine runs gives the same bits as
// the baseline build; the baseline gives the same bits as the Swift SIMD8 code it replaced (copied below as
// the reference); exp, sums and maxima against Double and scalar references.
import XCTest
import TestSupport
import CVectorKernels
@testable import Kernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - The Swift implementation the C kernels replaced (release 2026-11, Kernels/Vector.swift), as reference

private func swiftExp(_ x: SIMD8<Float>) -> SIMD8<Float> {
    var xc = x
    for j in 0 ..< 8 { xc[j] = Swift.min(Swift.max(xc[j], -87.3), 88.3) }
    let magic = SIMD8<Float>(repeating: 12582912)
    let t = xc * 1.44269504088896341 + magic
    let n = t - magic
    let r = xc - n * 0.693359375 + n * 2.12194440e-4
    var p = SIMD8<Float>(repeating: 1.9875691500e-4)
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    let y = p * (r * r) + r + 1
    let bits = (unsafeBitCast(t, to: SIMD8<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
    return y * unsafeBitCast(bits, to: SIMD8<Float>.self)
}

/// Applies a SIMD8 function to every element (zero-padded last group).
private func map8(_ x: [Float], _ f: (SIMD8<Float>) -> SIMD8<Float>) -> [Float] {
    var out = [Float](repeating: 0, count: x.count)
    var i = 0
    while i < x.count {
        var v = SIMD8<Float>(repeating: 0)
        for j in 0 ..< min(8, x.count - i) { v[j] = x[i + j] }
        let y = f(v)
        for j in 0 ..< min(8, x.count - i) { out[i + j] = y[j] }
        i += 8
    }
    return out
}

private let geluScale: Float = 0.7978845608028654, geluCubic: Float = 0.044715

private func swiftGelu(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let u: SIMD8<Float> = geluScale * (x + geluCubic * (x * x * x))
    return x * (1 / (1 + swiftExp(-2 * u)))
}

private func swiftGeluDerivative(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let u: SIMD8<Float> = geluScale * (x + geluCubic * (x * x * x))
    let s = 1 / (1 + swiftExp(-2 * u))
    let x2: SIMD8<Float> = x * x
    let du: SIMD8<Float> = geluScale * (1 + (3 * geluCubic) * x2)
    let ds: SIMD8<Float> = 2 * x * s * (1 - s)
    return s + ds * du
}

private func swiftSigmoid(_ x: SIMD8<Float>) -> SIMD8<Float> { 1 / (1 + swiftExp(-x)) }

private func bits(_ a: [Float]) -> [UInt32] { a.map(\.bitPattern) }

final class VectorKernelsTests: XCTestCase {
    // 1000 normals (scale 3) plus the clamp edges, huge values and an odd length (a short last vector).
    private func inputs(_ seed: UInt64, count: Int = 1013) -> [Float] {
        var rng = TestRNG(seed: seed)
        return rng.floats(count - 13, scale: 3) + [-200, -88, -87.3, -20, -1e-30, 0, -0.0, 1e-30, 20, 60, 88.3, 89, 200]
    }

    func testLevelChoice() {
        XCTAssertEqual(VectorKernels.level(for: CPUFeatures()), .baseline)
        var f = CPUFeatures(avx: true, avx2: true, fma: true)
        XCTAssertEqual(VectorKernels.level(for: f), min(.avx2, VectorKernels.builtLevel))
        f.avx512f = true; f.avx512bw = true; f.avx512dq = true
        XCTAssertEqual(VectorKernels.level(for: f), min(.avx2, VectorKernels.builtLevel), "AVX-512 needs VL too")
        f.avx512vl = true
        XCTAssertEqual(VectorKernels.level(for: f), VectorKernels.builtLevel)
        #if arch(x86_64)
        XCTAssertEqual(VectorKernels.builtLevel, .avx512)
        #endif
        print("vector kernels on this machine: \(VectorKernels.level) (runnable: \(VectorKernels.runnableLevels))")
    }

    /// Each kernel at every runnable level: the same bits as the baseline build.
    func testEveryLevelGivesTheSameBits() {
        let x = inputs(1), a = inputs(2), b = inputs(3), g = inputs(4).map { $0 / 3 }, n = x.count
        func run(_ level: VectorKernels.Level) -> [String: [Float]] {
            var r: [String: [Float]] = [:]
            var y = [Float](repeating: 0, count: n)
            geluForward(&y, x, n, level: level); r["gelu"] = y
            y = g; geluBackwardInPlace(&y, x, n, level: level); r["gelu in place"] = y
            swigluForward(&y, a, b, n, level: level); r["swiglu"] = y
            var d = g, db = b
            swigluBackwardInPlace(&d, &db, a, b, n, level: level); r["swiglu in place d"] = d; r["swiglu in place db"] = db
            var th = a, m = b.map { $0 / 10 }, v = g.map { $0 * $0 }
            adamWStep(param: &th, grad: x, expAvg: &m, expAvgSq: &v, count: n,
                      AdamWCoefficients(beta1: 0.9, beta2: 0.95, c1: 0.19, c2: 0.0975, lr: 3e-3, eps: 1e-8,
                                        weightDecay: 0.1, gradScale: 0.6), level: level)
            r["adamw param"] = th; r["adamw m"] = m; r["adamw v"] = v
            var e = [Float](repeating: 0, count: n)
            let s = cvk_exp_sum(level.rawValue, x, &e, n, 3.5)
            r["exp"] = e; r["exp sum"] = [s]
            r["max"] = [cvk_max(level.rawValue, x, n), cvk_max(level.rawValue, x, 7)]
            return r
        }
        let base = run(.baseline)
        // On a CPU without AVX2 only the baseline runs and there is nothing to compare (said in the output).
        if VectorKernels.runnableLevels == [.baseline] { print("only the baseline build runs on this CPU") }
        for level in VectorKernels.runnableLevels where level != .baseline {
            let r = run(level)
            for (name, values) in base { XCTAssertEqual(bits(r[name]!), bits(values), "\(name) at \(level)") }
            XCTAssertEqual(cvk_sum_squares(level.rawValue, x, n).bitPattern, cvk_sum_squares(0, x, n).bitPattern)
        }
    }

    /// The C build performs the operations of the Swift SIMD8 code it replaced: the same bits.
    func testSameBitsAsTheSwiftKernelsTheyReplaced() {
        let x = inputs(5), dout = inputs(6), n = x.count
        for level in VectorKernels.runnableLevels {
            var y = [Float](repeating: 0, count: n)
            geluForward(&y, x, n, level: level)
            XCTAssertEqual(bits(y), bits(map8(x, swiftGelu)), "gelu at \(level)")
            var e = [Float](repeating: 0, count: n)
            _ = cvk_exp_sum(level.rawValue, x, &e, n, 0.25)
            XCTAssertEqual(bits(e), bits(map8(x.map { $0 - 0.25 }, swiftExp)), "exp at \(level)")
            y = dout
            geluBackwardInPlace(&y, x, n, level: level)
            let der = map8(x, swiftGeluDerivative)
            XCTAssertEqual(bits(y), bits(zip(dout, der).map { $0 * $1 }), "gelu backward at \(level)")
            // SwiGLU with a = x, b = dout: forward x·σ(x)·b; backward (in place, g = d on entry) d = g·b·σ(1 + x(1 − σ)),
            // db = g·x·σ
            let sig = map8(x, swiftSigmoid), g = inputs(12).map { $0 / 5 }
            swigluForward(&y, x, dout, n, level: level)
            XCTAssertEqual(bits(y), bits((0 ..< n).map { x[$0] * sig[$0] * dout[$0] }), "swiglu at \(level)")
            var da = g, db = [Float](repeating: .nan, count: n)
            swigluBackwardInPlace(&da, &db, x, dout, n, level: level)
            let dsilu = (0 ..< n).map { sig[$0] * (1 + x[$0] * (1 - sig[$0])) }
            XCTAssertEqual(bits(da), bits((0 ..< n).map { g[$0] * dout[$0] * dsilu[$0] }), "swiglu da at \(level)")
            XCTAssertEqual(bits(db), bits((0 ..< n).map { g[$0] * x[$0] * sig[$0] }), "swiglu db at \(level)")
        }
    }

    /// A NaN input gives a NaN output at every level (its sign bit is not specified).
    func testNaNStaysNaN() {
        let x: [Float] = [1, .nan, -2, .nan, 3]
        for level in VectorKernels.runnableLevels {
            var y = [Float](repeating: 0, count: 5)
            geluForward(&y, x, 5, level: level)
            XCTAssertEqual(y.map(\.isNaN), [false, true, false, true, false], "gelu at \(level)")
            swigluForward(&y, x, x, 5, level: level)
            XCTAssertEqual(y.map(\.isNaN), [false, true, false, true, false], "swiglu at \(level)")
            var th: [Float] = [1, 1, 1, 1, 1], m = [Float](repeating: 0, count: 5), v = m
            adamWStep(param: &th, grad: x, expAvg: &m, expAvgSq: &v, count: 5,
                      AdamWCoefficients(beta1: 0.9, beta2: 0.999, c1: 0.1, c2: 0.001, lr: 1e-3, eps: 1e-8,
                                        weightDecay: 0, gradScale: 1), level: level)
            XCTAssertEqual(th.map(\.isNaN), [false, true, false, true, false], "adamw at \(level)")
            XCTAssertTrue(sumOfSquares(x, 5).isNaN)
        }
    }

    /// AdamW against the per-element Float formula (the Swift loop it replaced), bit for bit.
    func testAdamWMatchesTheScalarFormula() {
        let g = inputs(7), n = g.count
        var rng = TestRNG(seed: 8)
        let th0 = rng.floats(n), m0 = rng.floats(n, scale: 0.1), v0 = rng.floats(n, scale: 0.1).map { $0 * $0 }
        let k = AdamWCoefficients(beta1: 0.9, beta2: 0.999, c1: 1 - 0.9 * 0.9 * 0.9, c2: 1 - 0.999 * 0.999 * 0.999,
                                  lr: 1e-3, eps: 1e-8, weightDecay: 0.05, gradScale: 0.5)
        var th = th0, m = m0, v = v0
        for i in 0 ..< n {
            let gi = g[i] * k.gradScale
            m[i] = k.beta1 * m[i] + (1 - k.beta1) * gi
            v[i] = k.beta2 * v[i] + (1 - k.beta2) * gi * gi
            let mHat = m[i] / k.c1, vHat = v[i] / k.c2
            th[i] -= k.lr * (mHat / (vHat.squareRoot() + k.eps) + k.weightDecay * th[i])
        }
        for level in VectorKernels.runnableLevels {
            var tc = th0, mc = m0, vc = v0
            adamWStep(param: &tc, grad: g, expAvg: &mc, expAvgSq: &vc, count: n, k, level: level)
            XCTAssertEqual(bits(tc), bits(th), "param at \(level)")
            XCTAssertEqual(bits(mc), bits(m), "first moment at \(level)")
            XCTAssertEqual(bits(vc), bits(v), "second moment at \(level)")
        }
    }

    /// exp against libm's Double exp: within 2 ulp-ish (rtol 3e-7) inside the clamp, the clamp's value outside.
    func testExpAgainstDouble() {
        let x = inputs(9)
        var e = [Float](repeating: 0, count: x.count)
        _ = cvk_exp_sum(VectorKernels.level.rawValue, x, &e, x.count, 0)
        let expected = x.map { Foundation.exp(Double(Swift.min(Swift.max($0, -87.3), 88.3))) }
        assertClose(e, expected, rtol: 3e-7, atol: 0, "e^x")
        // the sum (m = 100 keeps it finite): Float lanes, so rtol 1e-5 against the Double sum of the same values
        var shifted = [Float](repeating: 0, count: x.count)
        let s = cvk_exp_sum(VectorKernels.level.rawValue, x, &shifted, x.count, 100)
        assertClose(Double(s), shifted.reduce(0.0) { $0 + Double($1) }, rtol: 1e-5, atol: 0, "Σ e^(x − 100)")
        XCTAssertEqual(cvk_exp_sum(VectorKernels.level.rawValue, x, nil, x.count, 100).bitPattern, s.bitPattern,
                       "the sum does not depend on storing the exponentials")
        var nanOut: Float = 0
        let nan: [Float] = [.nan]
        _ = cvk_exp_sum(0, nan, &nanOut, 1, 0)
        XCTAssertTrue(nanOut.isNaN, "NaN stays NaN through the clamp")
    }

    func testMaxAgainstAScalarLoop() {
        var x = inputs(10, count: 77)
        func scalarMax(_ a: [Float], _ n: Int) -> Float { var m = a[0]; for i in 1 ..< n where a[i] > m { m = a[i] }; return m }
        for level in VectorKernels.runnableLevels {
            for n in [1, 5, 16, 17, 77] { XCTAssertEqual(cvk_max(level.rawValue, x, n), scalarMax(x, n), "n \(n) at \(level)") }
            var y = x; y[40] = .nan
            XCTAssertEqual(cvk_max(level.rawValue, y, 77), scalarMax(y, 77), "a NaN after the first is skipped")
            y[0] = .nan
            XCTAssertTrue(cvk_max(level.rawValue, y, 77).isNaN, "a NaN first stays, as in the scalar loop")
        }
        x[3] = 1000
        XCTAssertEqual(cvk_max(0, x, 77), 1000)
    }

    /// Σg² in Double: against a Double loop (rtol 1e-12) and the same bits on 1, 2 and 3 threads
    /// (300,001 elements: four chunks of unequal length).
    func testSumOfSquares() {
        var rng = TestRNG(seed: 11)
        let g = rng.floats(300_001)
        let reference = g.reduce(0.0) { $0 + Double($1) * Double($1) }
        let one = sumOfSquares(g, g.count, workers: 1)
        assertClose(one, reference, rtol: 1e-12, atol: 0, "Σg²")
        for w in [2, 3] { XCTAssertEqual(sumOfSquares(g, g.count, workers: w).bitPattern, one.bitPattern, "\(w) threads") }
        XCTAssertEqual(sumOfSquares(g, 0), 0)
        XCTAssertEqual(sumOfSquares(g, 3, workers: 3), Double(g[0]) * Double(g[0]) + Double(g[1]) * Double(g[1]) + Double(g[2]) * Double(g[2]))
    }
}

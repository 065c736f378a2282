// Causal multi-head attention against a Double reference, finite differences and the causal mask.
import XCTest
import TestSupport
@testable import Kernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Double reference: per (b, h), P = causal softmax(q_h k_hᵀ / sqrt(dh)), out_h = P v_h.
/// Returns (out[B*T, C], probs[B, H, T, T]).
private func refAttention(_ q: [Double], _ k: [Double], _ v: [Double], _ B: Int, _ T: Int, _ C: Int, _ H: Int)
    -> (out: [Double], probs: [Double]) {
    let dh = C / H
    var out = [Double](repeating: 0, count: B * T * C)
    var probs = [Double](repeating: 0, count: B * H * T * T)
    for b in 0 ..< B {
        for h in 0 ..< H {
            for t in 0 ..< T {
                var s = [Double](repeating: 0, count: t + 1)
                for u in 0 ... t {
                    var acc = 0.0
                    for d in 0 ..< dh { acc += q[(b * T + t) * C + h * dh + d] * k[(b * T + u) * C + h * dh + d] }
                    s[u] = acc / Double(dh).squareRoot()
                }
                let m = s.max()!
                let e = s.map { exp($0 - m) }
                let z = e.reduce(0, +)
                for u in 0 ... t {
                    let p = e[u] / z
                    probs[((b * H + h) * T + t) * T + u] = p
                    for d in 0 ..< dh { out[(b * T + t) * C + h * dh + d] += p * v[(b * T + u) * C + h * dh + d] }
                }
            }
        }
    }
    return (out, probs)
}

final class AttentionTests: XCTestCase {
    let B = 2, T = 9, C = 6, H = 2   // dh = 3; T > 8 runs the SIMD8 path of the softmax-backward row dot

    func testForwardMatchesReference() {
        var rng = TestRNG(seed: 40)
        let n = B * T * C
        let q = rng.floats(n, scale: 1.5), k = rng.floats(n, scale: 1.5), v = rng.floats(n)
        var out = [Float](repeating: .nan, count: n), probs = [Float](repeating: .nan, count: B * H * T * T)
        attentionForward(&out, &probs, q, k, v, B, T, C, H)
        let ref = refAttention(toDouble(q), toDouble(k), toDouble(v), B, T, C, H)
        // Float softmax and sgemm vs Double
        assertClose(out, ref.out, rtol: 1e-5, atol: 1e-6, "out")
        assertClose(probs, ref.probs, rtol: 1e-5, atol: 1e-7, "probs")
        for bh in 0 ..< B * H {
            for t in 0 ..< T {
                for s in (t + 1) ..< T { XCTAssertEqual(probs[(bh * T + t) * T + s], 0, "masked prob [\(bh), \(t), \(s)]") }
            }
        }
    }

    func testBackwardFiniteDifference() {
        var rng = TestRNG(seed: 41)
        let n = B * T * C
        let q = rng.floats(n), k = rng.floats(n), v = rng.floats(n), dout = rng.floats(n)
        let qd = toDouble(q), kd = toDouble(k), vd = toDouble(v), dd = toDouble(dout)
        let (B, T, C, H) = (self.B, self.T, self.C, self.H)
        // L = Σ dout ⊙ attention(q, k, v)
        let gq = finiteDifference(qd) { dot(refAttention($0, kd, vd, B, T, C, H).out, dd) }
        let gk = finiteDifference(kd) { dot(refAttention(qd, $0, vd, B, T, C, H).out, dd) }
        let gv = finiteDifference(vd) { dot(refAttention(qd, kd, $0, B, T, C, H).out, dd) }

        var out = [Float](repeating: 0, count: n), probs = [Float](repeating: 0, count: B * H * T * T)
        attentionForward(&out, &probs, q, k, v, B, T, C, H)
        let dq0 = rng.floats(n), dk0 = rng.floats(n), dv0 = rng.floats(n)   // backward adds into these
        var dq = dq0, dk = dk0, dv = dv0
        var scratch = [Float](repeating: .nan, count: T * T)   // contents must not matter
        attentionBackward(&dq, &dk, &dv, dout, q, k, v, probs, &scratch, B, T, C, H)
        // Float analytic vs central differences (h = 1e-6) of the Double reference
        assertClose(dq, add(toDouble(dq0), gq), rtol: 1e-4, atol: 1e-5, "dq")
        assertClose(dk, add(toDouble(dk0), gk), rtol: 1e-4, atol: 1e-5, "dk")
        assertClose(dv, add(toDouble(dv0), gv), rtol: 1e-4, atol: 1e-5, "dv")
    }

    /// Changing tokens at positions >= 2 of sequence 0 leaves outputs at positions < 2 bit-identical,
    /// and changing sequence 1 leaves all of sequence 0 bit-identical.
    func testCausalMaskAndSequenceIndependence() {
        var rng = TestRNG(seed: 42)
        let n = B * T * C
        let q = rng.floats(n), k = rng.floats(n), v = rng.floats(n)
        var out = [Float](repeating: 0, count: n), probs = [Float](repeating: 0, count: B * H * T * T)
        attentionForward(&out, &probs, q, k, v, B, T, C, H)

        var q2 = q, k2 = k, v2 = v
        for i in (2 * C) ..< (T * C) { q2[i] += 1; k2[i] -= 2; v2[i] *= 3 }   // sequence 0, positions 2..<T
        var out2 = [Float](repeating: 0, count: n)
        attentionForward(&out2, &probs, q2, k2, v2, B, T, C, H)
        XCTAssertEqual(Array(out2[0 ..< (2 * C)]), Array(out[0 ..< (2 * C)]), "past outputs changed by future tokens")
        XCTAssertNotEqual(Array(out2[(2 * C) ..< (T * C)]), Array(out[(2 * C) ..< (T * C)]), "the change had no effect at all")

        var q3 = q, k3 = k, v3 = v
        for i in (T * C) ..< n { q3[i] = 0; k3[i] = 5; v3[i] = -1 }          // all of sequence 1
        var out3 = [Float](repeating: 0, count: n)
        attentionForward(&out3, &probs, q3, k3, v3, B, T, C, H)
        XCTAssertEqual(Array(out3[0 ..< (T * C)]), Array(out[0 ..< (T * C)]), "sequence 0 changed by sequence 1")
    }
}

// Router: softmax/logsumexp/top-k/gates against a Double reference, tie-breaking, gate normalisation,
// the backward against finite differences of a scalar loss, and the Switch aux loss by hand.
import XCTest
import TestSupport
@testable import Model
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Double reference router for one token: probabilities, logsumexp, and top-k by a stable sort
/// (descending probability, ascending index on ties).
private func refRoute(_ z: [Double], k: Int) -> (p: [Double], lse: Double, top: [Int]) {
    let m = z.max()!
    let s = z.reduce(0) { $0 + exp($1 - m) }
    let p = z.map { exp($0 - m) / s }
    let top = Array(p.indices.sorted { p[$0] != p[$1] ? p[$0] > p[$1] : $0 < $1 }.prefix(k))
    return (p, m + log(s), top)
}

/// Double reference gates for a fixed expert set.
private func refGates(_ p: [Double], _ top: [Int], normalize: Bool) -> [Double] {
    let g = top.map { p[$0] }
    if normalize && top.count > 1 {
        let s = g.reduce(0, +)
        return g.map { $0 / s }
    }
    return g
}

/// The softmax router of RouterMath.swift with the arguments these tests use (S = P for softmax).
private func routerForward(_ probs: inout [Float], _ lse: inout [Float], _ top: inout [Int32], _ gates: inout [Float],
                           _ logits: [Float], _ N: Int, _ E: Int, _ k: Int, normalize: Bool) {
    var scores = [Float](repeating: .nan, count: N * E)
    routerScoreForward(&scores, &probs, &lse, &top, &gates, logits, bias: nil, N, E, k, score: .softmax, normalize: normalize)
}

/// Its backward, with one aux-gradient row shared by every token (the micro-batch scope).
private func routerBackward(_ dz: inout [Float], _ dgates: [Float], _ probs: [Float], _ lse: [Float], _ top: [Int32],
                            _ N: Int, _ E: Int, _ k: Int, normalize: Bool, auxGrad: [Float]?, zGrad: Float) {
    // Softmax reads neither the logits nor separate scores (S = P): probs stands in for both.
    routerLogitsGradient(&dz, dgates, probs, probs, lse, probs, top, N, E, k, score: .softmax, normalize: normalize,
                        auxGrad: auxGrad, tokensPerAuxRow: N, zGrad: zGrad)
}

final class RouterTests: XCTestCase {
    private func route(_ logits: [Float], _ N: Int, _ E: Int, _ k: Int, normalize: Bool)
        -> (probs: [Float], lse: [Float], top: [Int32], gates: [Float]) {
        var probs = [Float](repeating: .nan, count: N * E), lse = [Float](repeating: .nan, count: N)
        var top = [Int32](repeating: -7, count: N * k), gates = [Float](repeating: .nan, count: N * k)
        routerForward(&probs, &lse, &top, &gates, logits, N, E, k, normalize: normalize)
        return (probs, lse, top, gates)
    }

    func testForwardMatchesReference() {
        var rng = TestRNG(seed: 70)
        let N = 3, E = 5, k = 2
        let z = rng.floats(N * E, scale: 2)
        let r = route(z, N, E, k, normalize: true)
        var p = [Double](), lse = [Double](), top = [Int32](), gates = [Double]()
        for t in 0 ..< N {
            let ref = refRoute(toDouble(Array(z[(t * E) ..< ((t + 1) * E)])), k: k)
            p += ref.p; lse.append(ref.lse); top += ref.top.map { Int32($0) }
            gates += refGates(ref.p, ref.top, normalize: true)
        }
        // Float softmax vs Double
        assertClose(r.probs, p, rtol: 1e-5, atol: 1e-7, "probs")
        assertClose(r.lse, lse, rtol: 1e-5, atol: 1e-6, "lse")
        XCTAssertEqual(r.top, top, "topIndex")
        assertClose(r.gates, gates, rtol: 1e-5, atol: 1e-7, "gates")
    }

    /// Equal probabilities go to the lower expert index; slots are in descending probability.
    func testTopKTieBreakingAndOrder() {
        // all equal: the lowest indices, in index order
        XCTAssertEqual(route([0.5, 0.5, 0.5, 0.5], 1, 4, 2, normalize: false).top, [0, 1])
        // a three-way tie for the top among experts 1, 2, 4
        XCTAssertEqual(route([1, 3, 3, 0, 3], 1, 5, 3, normalize: false).top, [1, 2, 4])
        XCTAssertEqual(route([1, 3, 3, 0, 3], 1, 5, 2, normalize: false).top, [1, 2])
        // tie below the top: 3 first, then the lower of the tied 0 and 2
        XCTAssertEqual(route([2, 1, 2, 5], 1, 4, 2, normalize: false).top, [3, 0])
        // strictly descending order regardless of index order
        XCTAssertEqual(route([0, 2, 1, 3], 1, 4, 3, normalize: false).top, [3, 1, 2])
        // k = E returns a full ranking
        XCTAssertEqual(route([4, -1, 4, 2], 1, 4, 4, normalize: false).top, [0, 2, 3, 1])
    }

    func testGateNormalisation() {
        let z: [Float] = [0.3, -1.2, 2.0, 0.7, 0.1, 1.1]
        let E = 6
        // k = 1: the gate is the probability itself, normalize or not (Switch)
        for normalize in [true, false] {
            let r = route(z, 1, E, 1, normalize: normalize)
            XCTAssertEqual(r.top, [2])
            XCTAssertEqual(r.gates, [r.probs[2]], "k = 1, normalize \(normalize)")
        }
        // k = 2 with normalisation: the gates sum to 1 and keep the probabilities' ratio
        let n = route(z, 1, E, 2, normalize: true)
        XCTAssertEqual(n.top, [2, 5])
        assertClose(Double(n.gates[0] + n.gates[1]), 1, rtol: 0, atol: 1e-6, "sum of normalised gates")
        assertClose(Double(n.gates[0] / n.gates[1]), Double(n.probs[2] / n.probs[5]), rtol: 1e-5, atol: 0, "ratio")
        // k = 2 without normalisation: the raw probabilities
        let u = route(z, 1, E, 2, normalize: false)
        XCTAssertEqual(u.gates, [u.probs[2], u.probs[5]])
    }

    /// routerBackward vs central differences of
    /// L(z) = Σ_t Σ_j w[t,j]·gates[t,j] + Σ_t Σ_e auxGrad[e]·P[t,e] + zGrad·Σ_t lse[t]²,
    /// with the top-k set held at the one chosen for the unperturbed logits (h = 1e-6 is far below every gap).
    func testBackwardFiniteDifference() {
        let N = 3, E = 5
        for (k, normalize) in [(1, true), (2, true), (2, false), (3, true)] {
            var rng = TestRNG(seed: 80 + UInt64(k))
            let z = rng.floats(N * E, scale: 1.5)
            var w = rng.floats(N * k)
            w[k - 1] = 0                                   // a dropped assignment has zero upstream gradient
            let aux = rng.floats(E, scale: 0.1)
            let zGrad: Float = 0.3
            let zd = toDouble(z), wd = toDouble(w), auxd = toDouble(aux)

            let r = route(z, N, E, k, normalize: normalize)
            var fixedTop = [[Int]]()
            for t in 0 ..< N { fixedTop.append(refRoute(Array(zd[(t * E) ..< ((t + 1) * E)]), k: k).top) }
            XCTAssertEqual(r.top, fixedTop.flatMap { $0.map { Int32($0) } }, "top-k set, k \(k)")

            let g = finiteDifference(zd) { zs in
                var L = 0.0
                for t in 0 ..< N {
                    let ref = refRoute(Array(zs[(t * E) ..< ((t + 1) * E)]), k: k)
                    let gates = refGates(ref.p, fixedTop[t], normalize: normalize)
                    for j in 0 ..< k { L += wd[t * k + j] * gates[j] }
                    for e in 0 ..< E { L += auxd[e] * ref.p[e] }
                    L += Double(zGrad) * ref.lse * ref.lse
                }
                return L
            }
            var dz = [Float](repeating: .nan, count: N * E)   // OVERWRITE: prior contents ignored
            routerBackward(&dz, w, r.probs, r.lse, r.top, N, E, k, normalize: normalize, auxGrad: aux, zGrad: zGrad)
            // Float analytic vs central differences of the Double reference
            assertClose(dz, g, rtol: 1e-4, atol: 1e-5, "k \(k), normalize \(normalize)")
        }
    }

    /// Without auxGrad and zGrad the gradient is that of Σ w·gates alone.
    func testBackwardWithoutAuxOrZ() {
        let N = 2, E = 4, k = 2
        var rng = TestRNG(seed: 90)
        let z = rng.floats(N * E), w = rng.floats(N * k)
        let r = route(z, N, E, k, normalize: true)
        let zd = toDouble(z), wd = toDouble(w)
        let tops = (0 ..< N).map { t in r.top[(t * k) ..< ((t + 1) * k)].map { Int($0) } }
        let g = finiteDifference(zd) { zs in
            var L = 0.0
            for t in 0 ..< N {
                let ref = refRoute(Array(zs[(t * E) ..< ((t + 1) * E)]), k: k)
                let gates = refGates(ref.p, tops[t], normalize: true)
                for j in 0 ..< k { L += wd[t * k + j] * gates[j] }
            }
            return L
        }
        var dz = [Float](repeating: .nan, count: N * E)
        routerBackward(&dz, w, r.probs, r.lse, r.top, N, E, k, normalize: true, auxGrad: nil, zGrad: 0)
        assertClose(dz, g, rtol: 1e-4, atol: 1e-5)
    }

    /// NaN logits must still yield k distinct in-range expert indices (the dispatcher indexes with them).
    func testNaNLogitsGiveValidIndices() {
        let r = route([.nan, 1, .nan, 0, 2, 1, 0, 3], 2, 4, 3, normalize: true)
        for t in 0 ..< 2 {
            let idx = Array(r.top[(t * 3) ..< (t * 3 + 3)])
            XCTAssertTrue(idx.allSatisfy { $0 >= 0 && $0 < 4 }, "row \(t): \(idx)")
            XCTAssertEqual(Set(idx).count, 3, "row \(t): \(idx)")
        }
        XCTAssertEqual(Array(r.top[3 ..< 6]), [3, 0, 1], "a finite row is unaffected")
    }
}

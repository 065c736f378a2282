// Routing variants against independent Double computations: sigmoid scores and gates, biased selection,
// the one aux loss by hand, per micro-batch and per sequence, the backward against central finite differences of a
// Double re-implementation of the loss, the bias rule and the agreement metric.
import XCTest
@testable import Model
import TestSupport

final class RouterMathTests: XCTestCase {
    let N = 6, E = 5, k = 2

    /// Runs the forward on logits; returns (scores, probs, lse, topIndex, gates).
    func forward(_ z: [Float], bias: [Float]? = nil, score: RouterScore, normalize: Bool = true, k: Int = 2)
        -> ([Float], [Float], [Float], [Int32], [Float]) {
        let N = z.count / E
        var s = [Float](repeating: 0, count: N * E), p = s, lse = [Float](repeating: 0, count: N)
        var idx = [Int32](repeating: 0, count: N * k), g = [Float](repeating: 0, count: N * k)
        let b = bias ?? []
        b.withUnsafeBufferPointer { bp in
            routerScoreForward(&s, &p, &lse, &idx, &g, z, bias: bias == nil ? nil : bp.baseAddress, N, E, k,
                               score: score, normalize: normalize)
        }
        return (s, p, lse, idx, g)
    }

    func testSigmoidScoresGatesAndSelectionAgainstDirectComputation() {
        var rng = TestRNG(seed: 3)
        let z = rng.floats(N * E)
        let bias: [Float] = [0.3, 0, -0.2, 0.05, 0]
        let (s, p, _, idx, g) = forward(z, bias: bias, score: .sigmoid)
        for t in 0 ..< N {
            let sig = (0 ..< E).map { 1 / (1 + exp(-Double(z[t * E + $0]))) }
            let total = sig.reduce(0, +)
            for e in 0 ..< E {
                XCTAssertEqual(Double(s[t * E + e]), sig[e], accuracy: 1e-6)
                XCTAssertEqual(Double(p[t * E + e]), sig[e] / total, accuracy: 1e-6)
            }
            // top-2 of S + b by sorting (descending, lower index first on ties)
            let order = (0 ..< E).sorted { (sig[$0] + Double(bias[$0]), -$0) > (sig[$1] + Double(bias[$1]), -$1) }
            XCTAssertEqual(idx[t * k ..< t * k + k].map(Int.init), Array(order.prefix(2)), "token \(t)")
            let chosen = order.prefix(2).map { sig[$0] }
            for j in 0 ..< k { XCTAssertEqual(Double(g[t * k + j]), chosen[j] / chosen.reduce(0, +), accuracy: 1e-6) }
        }
    }

    func testBiasShiftsSelectionNotGates() {
        // Two tokens, scores nearly equal on experts 0 and 1; a bias on expert 4 makes it win selection.
        var z = [Float](repeating: 0, count: 2 * E)
        z[0] = 1; z[1] = 0.9; z[E] = 1; z[E + 1] = 0.9
        let (s, _, _, idx, g) = forward(z, bias: [0, 0, 0, 0, 1], score: .softmax, k: 1)
        XCTAssertEqual(idx, [4, 4])
        XCTAssertEqual(g[0], s[4], "the gate is the unbiased score (k = 1: not renormalised)")
        let (_, _, _, plain, _) = forward(z, score: .softmax, k: 1)
        XCTAssertEqual(plain, [0, 0])
    }

    func testTiesGoToTheLowerIndex() {
        let z = [Float](repeating: 0.5, count: E)
        let (_, _, _, idx, _) = forward(z, score: .sigmoid)
        XCTAssertEqual(idx, [0, 1])
    }

    func testLoadBalancingLossByHand() {
        // E = 4, k = 1, N = 10: counts [4, 3, 2, 1] give f = [0.4, 0.3, 0.2, 0.1]; probSum [2.5, 2.5, 3, 2] gives
        // Pbar = [0.25, 0.25, 0.3, 0.2]; Σ f·Pbar = 0.1 + 0.075 + 0.06 + 0.02 = 0.255, aux = 4 · 0.255 = 1.02.
        // dL/dP[t,e] = scale · E · f_e / N = 0.5 · 4 · f_e / 10.
        var dP = [Float](repeating: 0, count: 4)
        let aux = loadBalancingLoss(counts: [4, 3, 2, 1], probSum: [2.5, 2.5, 3, 2], tokensPerRow: 10, topK: 1, experts: 4,
                                    scale: 0.5, dProb: &dP)
        assertClose(aux, 1.02, rtol: 1e-12, atol: 0)
        assertClose(dP, [0.08, 0.06, 0.04, 0.02], rtol: 1e-6, atol: 0)
        // perfectly balanced (k = 2: 2·N assignments): 1
        assertClose(loadBalancingLoss(counts: [5, 5, 5, 5], probSum: [2.5, 2.5, 2.5, 2.5], tokensPerRow: 10, topK: 2,
                                      experts: 4), 1, rtol: 1e-12, atol: 0)
        // everything on expert 0 with all probability there: E = 4
        assertClose(loadBalancingLoss(counts: [10, 0, 0, 0], probSum: [10, 0, 0, 0], tokensPerRow: 10, topK: 1, experts: 4),
                    4, rtol: 1e-12, atol: 0)
        XCTAssertEqual(loadBalancingLoss(counts: [0, 0], probSum: [0, 0], tokensPerRow: 0, topK: 1, experts: 2), 0, "no tokens")
    }

    func testAuxLossMicroBatchAndSequenceScopesAgainstDirectComputation() {
        // 2 sequences of 3 tokens; counts and probability sums per sequence.
        let T = 3, S = 2
        var rng = TestRNG(seed: 9)
        let z = rng.floats(S * T * E)
        let (_, p, _, idx, _) = forward(z, score: .sigmoid)
        var counts = [Int64](repeating: 0, count: S * E), probSum = [Double](repeating: 0, count: S * E)
        for t in 0 ..< S * T {
            for j in 0 ..< k { counts[(t / T) * E + Int(idx[t * k + j])] += 1 }
            for e in 0 ..< E { probSum[(t / T) * E + e] += Double(p[t * E + e]) }
        }
        // Direct: per sequence E·Σ f·Pbar, mean over sequences.
        var direct = 0.0
        for sq in 0 ..< S {
            var s = 0.0
            for e in 0 ..< E { s += Double(counts[sq * E + e]) / Double(T * k) * probSum[sq * E + e] / Double(T) }
            direct += Double(E) * s / Double(S)
        }
        var grad = [Float](repeating: 0, count: S * E)
        let seq = loadBalancingLoss(counts: counts, probSum: probSum, rows: S, groups: S, tokensPerRow: T, topK: k,
                                    experts: E, scale: 0.5, dProb: &grad)
        XCTAssertEqual(seq, direct, accuracy: 1e-12)
        XCTAssertEqual(Double(grad[E + 2]), 0.5 * Double(E) * Double(counts[E + 2]) / Double(T * k) / Double(T * S),
                       accuracy: 1e-7)
        // Two ranks holding one sequence each: their partial sums add up to the loss.
        let r0 = loadBalancingLoss(counts: counts, probSum: probSum, rows: 1, groups: S, tokensPerRow: T, topK: k, experts: E)
        let r1 = counts.withUnsafeBufferPointer { c in probSum.withUnsafeBufferPointer { ps in
            loadBalancingLoss(counts: c.baseAddress! + E, probSum: ps.baseAddress! + E, rows: 1, groups: S, tokensPerRow: T,
                              topK: k, experts: E) } }
        XCTAssertEqual(r0 + r1, direct, accuracy: 1e-12)
        // Micro-batch scope: the sums over both sequences as one group.
        let mbCounts = (0 ..< E).map { counts[$0] + counts[E + $0] }, mbProb = (0 ..< E).map { probSum[$0] + probSum[E + $0] }
        var mbDirect = 0.0
        for e in 0 ..< E { mbDirect += Double(mbCounts[e]) / Double(S * T * k) * mbProb[e] / Double(S * T) }
        XCTAssertEqual(loadBalancingLoss(counts: mbCounts, probSum: mbProb, tokensPerRow: S * T, topK: k, experts: E),
                       Double(E) * mbDirect, accuracy: 1e-12)
    }

    /// L(z) = Σ w·gates + Σ_t a_row(t)·P[t] + zc·Σ lse², top-k sets held fixed, in Double; central differences.
    func checkBackward(score: RouterScore, normalize: Bool, k: Int) {
        var rng = TestRNG(seed: 11 + UInt64(k) + (score == .sigmoid ? 100 : 0))
        let z = rng.floats(N * E, scale: 1.5)
        let w = rng.floats(N * k)
        let tokensPerRow = 3
        let aux = rng.floats((N / tokensPerRow) * E, scale: 0.3)
        let zc: Float = 0.1
        let (s, p, lse, idx, _) = forward(z, score: score, normalize: normalize, k: k)
        var dz = [Float](repeating: 0, count: N * E)
        routerLogitsGradient(&dz, w, s, p, lse, z, idx, N, E, k, score: score, normalize: normalize,
                            auxGrad: aux, tokensPerAuxRow: tokensPerRow, zGrad: zc)
        func loss(_ zz: [Double]) -> Double {
            var L = 0.0
            for t in 0 ..< N {
                let row = Array(zz[t * E ..< (t + 1) * E])
                let m = row.max()!
                let lse = m + log(row.map { exp($0 - m) }.reduce(0, +))
                let soft = row.map { exp($0 - lse) }
                let S = score == .softmax ? soft : row.map { 1 / (1 + exp(-$0)) }
                let P = score == .softmax ? soft : S.map { $0 / S.reduce(0, +) }
                let chosen = (0 ..< k).map { S[Int(idx[t * k + $0])] }
                let norm = normalize && k > 1 ? chosen.reduce(0, +) : 1
                for j in 0 ..< k { L += Double(w[t * k + j]) * chosen[j] / norm }
                for e in 0 ..< E { L += Double(aux[(t / tokensPerRow) * E + e]) * P[e] }
                L += Double(zc) * lse * lse
            }
            return L
        }
        let zd = z.map(Double.init)
        var numeric = [Double](repeating: 0, count: N * E)
        for i in 0 ..< N * E {
            var a = zd, b = zd
            a[i] += 1e-5; b[i] -= 1e-5
            numeric[i] = (loss(a) - loss(b)) / 2e-5
        }
        assertClose(dz, numeric, rtol: 1e-3, atol: 1e-5, "\(score) normalize \(normalize) k \(k)")
    }

    func testBackwardAgainstFiniteDifferences() {
        for score in [RouterScore.softmax, .sigmoid] {
            for (normalize, k) in [(true, 2), (false, 2), (true, 1)] { checkBackward(score: score, normalize: normalize, k: k) }
        }
    }

    func testSelectionBiasRule() {
        var b: [Float] = [0, 0, 0, 0, 0]
        let counts: [Int64] = [10, 2, 6, 6, 6]          // mean 6
        stepSelectionBias(&b, counts: counts, E, rate: 0.001)
        XCTAssertEqual(b, [-0.001, 0.001, 0, 0, 0], "sign(mean − c), sign(0) = 0")
    }

    func testAgreement() {
        let a: [Int32] = [0, 1, 2, 3, 4, 0]
        XCTAssertEqual(routingAgreementSum(a, a, 3, 2) / 3, 1, "identical choices agree fully")
        let disjoint: [Int32] = [2, 3, 0, 1, 1, 2]
        XCTAssertEqual(routingAgreementSum(a, disjoint, 3, 2), 0, "never overlapping")
        let half: [Int32] = [1, 4, 2, 0, 4, 3]          // token 0 shares 1, token 1 shares 2, token 2 shares 4
        XCTAssertEqual(routingAgreementSum(a, half, 3, 2) / 3, 0.5, accuracy: 1e-12)
    }
}

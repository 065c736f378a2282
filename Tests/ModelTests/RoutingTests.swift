// The router's pure parts: the Switch load-balancing loss by hand, and the capacity keep mask against a
// naive loop over the global micro-batch (exact: integer decisions).
import XCTest
import TestSupport
@testable import Model

final class RoutingTests: XCTestCase {
    func testSwitchLoadBalancingLossByHand() {
        // E = 4, k = 1, N = 10: counts [4, 3, 2, 1] give f = [0.4, 0.3, 0.2, 0.1]; probSum [2.5, 2.5, 3, 2] gives
        // Pbar = [0.25, 0.25, 0.3, 0.2]; Σ f·Pbar = 0.1 + 0.075 + 0.06 + 0.02 = 0.255, aux = 4 · 0.255 = 1.02.
        // dL/dP[t,e] = scale · E · f_e / N = 0.5 · 4 · f_e / 10.
        var dP = [Float](repeating: 0, count: 4)
        let aux = switchLoadBalancingLoss(counts: [4, 3, 2, 1], probSum: [2.5, 2.5, 3, 2], tokens: 10, topK: 1, experts: 4,
                                          scale: 0.5, dProb: &dP)
        assertClose(aux, 1.02, rtol: 1e-12, atol: 0)
        assertClose(dP, [0.08, 0.06, 0.04, 0.02], rtol: 1e-6, atol: 0)
        // perfectly balanced (k = 2: 2·N assignments): 1
        assertClose(switchLoadBalancingLoss(counts: [5, 5, 5, 5], probSum: [2.5, 2.5, 2.5, 2.5], tokens: 10, topK: 2, experts: 4),
                    1, rtol: 1e-12, atol: 0)
        // everything on expert 0 with all probability there: E = 4
        assertClose(switchLoadBalancingLoss(counts: [10, 0, 0, 0], probSum: [10, 0, 0, 0], tokens: 10, topK: 1, experts: 4),
                    4, rtol: 1e-12, atol: 0)
    }

    /// Ranks' selections laid end to end form the global micro-batch; the naive loop walks slot j, then
    /// global token, counting per expert and keeping while the count is below C.
    func testCapacityKeepMaskAgainstNaiveLoop() {
        var rng = SplitMix64(seed: 3)
        for trial in 0 ..< 40 {
            let E = 2 + trial % 5, k = 1 + trial % min(E, 3), W = 1 + trial % 4
            let Ns = (0 ..< W).map { _ in Int(rng.next() % 9) }
            let selections: [[Int32]] = Ns.map { N in
                (0 ..< N).flatMap { _ -> [Int32] in
                    var picks: [Int32] = []
                    while picks.count < k { let e = Int32(rng.next() % UInt64(E)); if !picks.contains(e) { picks.append(e) } }
                    return picks
                }
            }
            let factor = [0.25, 0.5, 1.0, 1.5][trial % 4]
            let C = expertCapacity(factor: factor, tokens: Ns.reduce(0, +), topK: k, experts: E)
            // naive
            var naive = Ns.map { [Int32](repeating: 0, count: $0 * k) }
            var taken = [Int](repeating: 0, count: E), naiveDropped = 0
            for j in 0 ..< k {
                for r in 0 ..< W {
                    for t in 0 ..< Ns[r] {
                        let e = Int(selections[r][t * k + j])
                        if taken[e] < C { naive[r][t * k + j] = 1; taken[e] += 1 } else { naiveDropped += 1 }
                    }
                }
            }
            // per rank, from the global and earlier ranks' slot counts
            var slotCounts = [Int](repeating: 0, count: k * E)
            for r in 0 ..< W { for a in 0 ..< Ns[r] * k { slotCounts[(a % k) * E + Int(selections[r][a])] += 1 } }
            var before = [Int](repeating: 0, count: k * E)
            for r in 0 ..< W {
                var keep = [Int32](repeating: 7, count: Ns[r] * k + 1), cursor = [Int](repeating: 0, count: k * E)
                let dropped = capacityKeepMask(&keep, selected: selections[r] + [0], N: Ns[r], k: k, E: E, capacity: C,
                                               slotCounts: slotCounts, slotCountsBefore: before, cursor: &cursor)
                XCTAssertEqual(Array(keep.prefix(Ns[r] * k)), naive[r], "trial \(trial) rank \(r) of \(W), E \(E) k \(k) C \(C)")
                XCTAssertEqual(dropped, naiveDropped, "trial \(trial): drops")
                for a in 0 ..< Ns[r] * k { before[(a % k) * E + Int(selections[r][a])] += 1 }
            }
        }
    }
}

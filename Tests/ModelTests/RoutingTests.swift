// The capacity keep mask against a naive loop over the global micro-batch (exact: integer decisions).
// (The router's other pure parts are tested in RouterMathTests.)
import XCTest
import TestSupport
@testable import Model

final class RoutingTests: XCTestCase {
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

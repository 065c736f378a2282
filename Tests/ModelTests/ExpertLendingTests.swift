// Expert lending (Model/MoE/ExpertLending.swift): a busy rank of an expert group lends whole experts to the
// least busy one for one MoE use. It must change no bit: the same model steps on 2-4 ranks with every loan the
// plan allows (a loan costing nothing) and with lending off give identical losses, gradients and parameters,
// compared exactly (this is the one test of that). And the plan itself: deterministic, only ever lowering the
// larger load.
import XCTest
import Foundation
import Collectives
import Configuration
import Kernels
import TestSupport
@testable import Model

final class ExpertLendingTests: XCTestCase {
    /// Every loan the plan allows: a loan costs nothing, up to 4 per use.
    let eager = ExpertLendingPolicy(enabled: true, transferRows: 0, maxLoans: 4)

    /// The group rank that runs each expert (LendingPlanner, freshly made).
    private func plan(rows: [Int], slices: [Range<Int>], policy: ExpertLendingPolicy) -> [Int] {
        var runner = [Int](repeating: 0, count: rows.count)
        LendingPlanner(slices: slices, experts: rows.count).plan(rows: rows, policy: policy, into: &runner)
        return runner
    }

    // MARK: the plan

    func testBalancedGroupLendsNothing() {
        let slices = [0 ..< 4, 4 ..< 8]
        let rows = [10, 12, 9, 11, 11, 10, 12, 9]
        XCTAssertEqual(plan(rows: rows, slices: slices, policy: .automatic(threads: 1)), [0, 0, 0, 0, 1, 1, 1, 1])
    }

    func testOffKeepsEveryExpertOnItsOwner() {
        let slices = [0 ..< 2, 2 ..< 4]
        XCTAssertEqual(plan(rows: [0, 0, 500, 400], slices: slices, policy: .off), [0, 0, 1, 1])
    }

    /// Rank 1 holds 900 of 1000 rows. With loans free, lending expert 3 (400 rows) leaves 500 | 500 (expert 2
    /// would leave 600 | 400), and then nothing lowers 500. A loan costs its rows on both ranks: one costing
    /// 300 still pays (max(500, 500) + 300 < 900); one costing 450 does not (500 + 450 and 600 + 450 are not
    /// below 900).
    func testBusyRankLendsWhileTheLargerLoadFalls() {
        let slices = [0 ..< 2, 2 ..< 4], rows = [60, 40, 500, 400]
        XCTAssertEqual(plan(rows: rows, slices: slices, policy: eager), [0, 0, 1, 0])
        let cost300 = ExpertLendingPolicy(enabled: true, transferRows: 300, maxLoans: 4)
        XCTAssertEqual(plan(rows: rows, slices: slices, policy: cost300), [0, 0, 1, 0])
        let cost450 = ExpertLendingPolicy(enabled: true, transferRows: 450, maxLoans: 4)
        XCTAssertEqual(plan(rows: rows, slices: slices, policy: cost450), [0, 0, 1, 1])
    }

    /// On random loads over 2-4 ranks: at most maxLoans loans, and the largest load (each loan's cost charged
    /// to its owner and its helper) never rises, and falls on two ranks whenever a loan is made. One planner
    /// reused for every trial gives the same plans as fresh ones (its scratch carries nothing over).
    func testPlanPropertiesOnRandomLoads() {
        var rng = SplitMix64(seed: 11)
        var reused: [Int: LendingPlanner] = [:]
        for trial in 0 ..< 300 {
            let G = 2 + trial % 3, E = G + Int(rng.next() % 30)
            let layout = (0 ..< G).map { g in
                try! ExpertParallelLayout(worldSize: G, rank: g, expertParallel: G, numExperts: E).localExperts
            }
            let hot = Int(rng.next() % UInt64(E))
            let rows = (0 ..< E).map { e in Int(rng.next() % 50) + (e == hot ? Int(rng.next() % 2000) : 0) }
            let policy = ExpertLendingPolicy(enabled: true, transferRows: Int(rng.next() % 80), maxLoans: 1 + trial % 4)
            let runner = plan(rows: rows, slices: layout, policy: policy)
            var again = [Int](repeating: -1, count: E)
            reused[G * 100 + E, default: LendingPlanner(slices: layout, experts: E)].plan(rows: rows, policy: policy, into: &again)
            XCTAssertEqual(again, runner, "trial \(trial): a reused planner")
            var before = [Int](repeating: 0, count: G), after = before, loans = 0
            for (g, slice) in layout.enumerated() {
                for e in slice {
                    before[g] += rows[e]
                    after[runner[e]] += rows[e]
                    if runner[e] != g { loans += 1; after[g] += policy.transferRows; after[runner[e]] += policy.transferRows }
                }
            }
            XCTAssertLessThanOrEqual(loans, policy.maxLoans, "trial \(trial)")
            XCTAssertLessThanOrEqual(after.max()!, before.max()!, "trial \(trial): rows \(rows), plan \(runner)")
            if loans > 0 && G == 2 { XCTAssertLessThan(after.max()!, before.max()!, "trial \(trial): a loan that did not pay") }
        }
    }

    /// With 2 threads per rank a loan must leave both ranks at least 2 experts with rows (else the products of
    /// one would be split over the threads and round differently).
    func testSeveralThreadsKeepTwoBusyExpertsPerRank() {
        let slices = [0 ..< 3, 3 ..< 6]
        let twoThreads = ExpertLendingPolicy(enabled: true, transferRows: 0, maxLoans: 1, threads: 2)
        // Rank 1 has 3 busy experts: it may lend one (keeping 2) to rank 0, which has 2 of its own; expert 3
        // leaves max(300, 320), the least.
        XCTAssertEqual(plan(rows: [10, 10, 0, 300, 200, 100], slices: slices, policy: twoThreads),
                       [0, 0, 0, 0, 1, 1])
        // Rank 0 has one busy expert of its own: it may not help.
        XCTAssertEqual(plan(rows: [10, 0, 0, 300, 200, 100], slices: slices, policy: twoThreads),
                       [0, 0, 0, 1, 1, 1])
        // Rank 1 has 2 busy experts: lending one would leave it 1.
        XCTAssertEqual(plan(rows: [10, 10, 0, 300, 200, 0], slices: slices, policy: twoThreads),
                       [0, 0, 0, 1, 1, 1])
        // One thread: no such limit.
        let oneThread = ExpertLendingPolicy(enabled: true, transferRows: 0, maxLoans: 1, threads: 1)
        XCTAssertNotEqual(plan(rows: [10, 0, 0, 300, 200, 0], slices: slices, policy: oneThread),
                          [0, 0, 0, 1, 1, 1])
    }

    // MARK: the model is unchanged, bit for bit

    /// 40 experts on 2 ranks, on 4 ranks in 2 expert groups of 2, on 4 ranks in one group (loans between any
    /// two of four) and on 3 (uneven slices: 14, 13, 13), gelu and swiglu, with capacity drops, top-3 (a
    /// token's three rows are added in expert order), packed products and BLAS: four model steps per rank,
    /// gradients accumulating over the steps (a returned gradient adds into what the owner had) and the weights
    /// moving between steps, with eager lending against none: losses, gradients and parameters exactly equal.
    /// The counters show loans were made.
    func testLendingChangesNoBitOfTheModel() throws {
        let cases: [(name: String, W: Int, G: Int, edit: (inout RunConfig) -> Void)] = [
            ("gelu", 2, 2, { _ in }),
            ("swiglu capacity 0.7, BLAS", 2, 2, { $0.moe.activation = .swiglu; $0.moe.capacityFactor = 0.7 }),
            ("top-3", 4, 2, { $0.moe.topK = 3 }),
            ("swiglu top-3 indexed experts", 4, 4, { $0.moe.activation = .swiglu; $0.moe.topK = 3; $0.moe.experts = .indexed }),
            ("uneven slices", 3, 3, { _ in }),
        ]
        for (name, W, G, edit) in cases {
            let c = tinyConfig { $0.moe.numExperts = 40; $0.moe.dFF = 20; edit(&$0) }
            let kernel = name.hasSuffix("BLAS") ? nil : ParallelContext.defaultExpertKernel
            let (ref, refLoans) = try modelSteps(c, W: W, G: G, lending: .off, kernel: kernel)
            let (lent, loans) = try modelSteps(c, W: W, G: G, lending: eager, kernel: kernel)
            let label = "\(name) W=\(W) G=\(G)"
            print("lending \(label): \(loans) loans (all ranks)")
            XCTAssertEqual(refLoans, 0, "\(label): loans with lending off")
            XCTAssertGreaterThan(loans, 0, "\(label): no expert was lent, the test checks nothing")
            XCTAssertEqual(lent.count, W)
            for r in 0 ..< min(W, lent.count) {
                XCTAssertEqual(lent[r].losses, ref[r].losses, "\(label) rank \(r): losses")
                XCTAssertTrue(lent[r].grads == ref[r].grads, "\(label) rank \(r): gradients differ")
                XCTAssertTrue(lent[r].params == ref[r].params, "\(label) rank \(r): parameters differ")
            }
        }
    }

    private struct RankResult { var losses: [Double], grads: [Float], params: [Float] }

    /// Four forward+backward steps of `c` on every rank of a world of `W` threads (expert groups of `G`),
    /// each rank on its own tokens, gradients never zeroed, and the weights moved by −1e-3 · gradient after each
    /// step. Returns every rank's result and the loans made over all ranks.
    private func modelSteps(_ c: RunConfig, W: Int, G: Int, lending: ExpertLendingPolicy,
                            kernel: PackedMatmul.Kernel?) throws -> ([RankResult], Int) {
        final class Results: @unchecked Sendable {
            let lock = NSLock(); var byRank: [Int: RankResult] = [:]; var loans = 0
        }
        let results = Results()
        try ThreadWorld.run(size: W) { comm in
            var ctx = try ParallelContext.make(world: comm, expertParallel: G, numExperts: c.moe.numExperts)
            ctx.expertLending = lending
            ctx.expertKernel = kernel
            let model = RecurrentMoEModel(config: c, ctx: ctx)
            let B = 2, T = c.model.seqLen, s = model.store
            s.grads.update(repeating: 0, count: s.count)
            var losses: [Double] = []
            for step in 0 ..< 4 {
                let (x, y) = tokenBatch(B: B, T: T, V: c.model.vocabSize, seed: UInt64(100 * comm.rank + step))
                let r = model.step(inputs: x, targets: y, B: B, T: T, scales: LossScales(ce: 1, aux: 0.01, z: 0.001),
                                   applyCapacity: true, backward: true)
                losses.append(r.ceSum + r.routing.reduce(0) { $0 + $1.aux })
                for i in 0 ..< s.count { s.params[i] -= 1e-3 * s.grads[i] }
            }
            let result = RankResult(losses: losses, grads: Array(UnsafeBufferPointer(start: s.grads, count: s.count)),
                                    params: Array(UnsafeBufferPointer(start: s.params, count: s.count)))
            results.lock.lock(); results.byRank[comm.rank] = result; results.loans += ctx.lendingCounter.loans
            results.lock.unlock()
        }
        return ((0 ..< W).compactMap { results.byRank[$0] }, results.loans)
    }
}

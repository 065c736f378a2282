// Expert lending (Model/MoE/ExpertLending.swift): a busy rank of an expert group lends whole experts to the
// least busy one for one MoE use. It must change no bit of training: the same run with every loan the plan
// allows (a loan costing nothing) and with lending off gives identical losses, gradient norms and
// parameters, compared exactly. And the plan itself: deterministic, only ever lowering the larger load.
import XCTest
import Collectives
import Configuration
import DataPipeline
import Model
import Training
import TestSupport

final class ExpertLendingTests: XCTestCase {
    /// Every loan the plan allows: a loan costs nothing, up to 4 per use.
    let eager = ExpertLendingPolicy(enabled: true, transferRows: 0, maxLoans: 4)

    // MARK: the plan

    func testBalancedGroupLendsNothing() {
        let slices = [0 ..< 4, 4 ..< 8]
        let rows = [10, 12, 9, 11, 11, 10, 12, 9]
        XCTAssertEqual(ExpertLending.plan(rows: rows, slices: slices, policy: .automatic(threads: 1)), [0, 0, 0, 0, 1, 1, 1, 1])
    }

    func testOffKeepsEveryExpertOnItsOwner() {
        let slices = [0 ..< 2, 2 ..< 4]
        XCTAssertEqual(ExpertLending.plan(rows: [0, 0, 500, 400], slices: slices, policy: .off), [0, 0, 1, 1])
    }

    /// Rank 1 holds 900 of 1000 rows. With loans free, lending expert 3 (400 rows) leaves 500 | 500 (expert 2
    /// would leave 600 | 400), and then nothing lowers 500. A loan costs its rows on both ranks: one costing
    /// 300 still pays (max(500, 500) + 300 < 900); one costing 450 does not (500 + 450 and 600 + 450 are not
    /// below 900).
    func testBusyRankLendsWhileTheLargerLoadFalls() {
        let slices = [0 ..< 2, 2 ..< 4], rows = [60, 40, 500, 400]
        XCTAssertEqual(ExpertLending.plan(rows: rows, slices: slices, policy: eager), [0, 0, 1, 0])
        let cost300 = ExpertLendingPolicy(enabled: true, transferRows: 300, maxLoans: 4)
        XCTAssertEqual(ExpertLending.plan(rows: rows, slices: slices, policy: cost300), [0, 0, 1, 0])
        let cost450 = ExpertLendingPolicy(enabled: true, transferRows: 450, maxLoans: 4)
        XCTAssertEqual(ExpertLending.plan(rows: rows, slices: slices, policy: cost450), [0, 0, 1, 1])
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
            let runner = ExpertLending.plan(rows: rows, slices: layout, policy: policy)
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
        XCTAssertEqual(ExpertLending.plan(rows: [10, 10, 0, 300, 200, 100], slices: slices, policy: twoThreads),
                       [0, 0, 0, 0, 1, 1])
        // Rank 0 has one busy expert of its own: it may not help.
        XCTAssertEqual(ExpertLending.plan(rows: [10, 0, 0, 300, 200, 100], slices: slices, policy: twoThreads),
                       [0, 0, 0, 1, 1, 1])
        // Rank 1 has 2 busy experts: lending one would leave it 1.
        XCTAssertEqual(ExpertLending.plan(rows: [10, 10, 0, 300, 200, 0], slices: slices, policy: twoThreads),
                       [0, 0, 0, 1, 1, 1])
        // One thread: no such limit.
        let oneThread = ExpertLendingPolicy(enabled: true, transferRows: 0, maxLoans: 1, threads: 1)
        XCTAssertNotEqual(ExpertLending.plan(rows: [10, 0, 0, 300, 200, 0], slices: slices, policy: oneThread),
                          [0, 0, 0, 1, 1, 1])
    }

    // MARK: training is unchanged, bit for bit

    /// tiny with 40 experts on 2 ranks, on 4 ranks in 2 expert groups of 2, on 4 ranks in one group (loans
    /// between any two of four) and on 3 (uneven slices), gelu and swiglu, with capacity drops, top-3 (a token's
    /// three rows are added in expert order): eager lending against none, exactly equal. The counters show
    /// loans were made.
    func testLendingChangesNoBitOfTraining() throws {
        let cases: [(overrides: [String], W: Int, G: Int)] = [
            ([], 2, 2),
            (["moe.activation=swiglu", "moe.capacity_factor=0.7"], 2, 2),
            (["moe.top_k=3"], 4, 2),
            (["moe.activation=swiglu", "moe.top_k=3"], 4, 4),
            (["train.global_batch=6"], 3, 3),      // 40 experts over 3 ranks: slices of 14, 13, 13
        ]
        for (overrides, W, G) in cases {
            let (c, data) = try tinyRun(["moe.num_experts=40", "train.global_batch=8"] + overrides)
            let (ref, refParams) = try trainInProcess(c, data: data, worldSize: W, steps: 8, expertParallel: G, lending: .off)
            final class Loans: @unchecked Sendable { let lock = NSLock(); var loans = 0, uses = 0 }
            let seen = Loans()
            let (lent, lentParams) = try trainInProcess(c, data: data, worldSize: W, steps: 8, expertParallel: G,
                                                        lending: eager) { _, counter in
                seen.lock.lock(); seen.loans += counter.loans; seen.uses += counter.usesWithLoans; seen.lock.unlock()
            }
            let label = "\(overrides) W=\(W) G=\(G)"
            print("lending \(label): \(seen.loans) loans in \(seen.uses) uses (all ranks)")
            XCTAssertGreaterThan(seen.loans, 0, "\(label): no expert was lent, the test checks nothing")
            XCTAssertEqual(lent.map(\.loss), ref.map(\.loss), "\(label): losses")
            XCTAssertEqual(lent.map(\.gradNorm), ref.map(\.gradNorm), "\(label): gradient norms")
            XCTAssertEqual(lentParams.maxDifference(to: refParams), 0, "\(label): parameters")
        }
    }
}

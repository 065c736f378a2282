// Stage gates on constructed histories whose answer is known: every clause of the stop and
// promote rules, each just inside and just outside its threshold (defaults of gate.*).
import XCTest
import Configuration
import Experiments
import Training

final class StageGateTests: XCTestCase {
    let g = GateConfig()

    // MARK: Builders

    /// Evals every 500 steps from step 500 with these losses.
    func evals(_ losses: [Double]) -> [EvalPoint] {
        losses.enumerated().map { EvalPoint(step: 500 * ($0.offset + 1), tokens: 500 * ($0.offset + 1) * 100, loss: $0.element) }
    }

    /// Train points every 10 steps up to `last`, loss = 4 + slopePer1k · step / 1000.
    func train(upTo last: Int, slopePer1k: Double = 0, tokensPerSec: Double = 1000) -> [TrainPoint] {
        stride(from: 10, through: last, by: 10).map { TrainPoint(step: $0, loss: 4 + slopePer1k * Double($0) / 1000, tokensPerSec: tokensPerSec) }
    }

    /// Routing rows every 100 steps; window i (steps in (500·i, 500·(i+1)]) gets `values(i)`.
    func routing(upTo last: Int, _ values: (Int) -> (Double, Double, Double) = { _ in (0.9, 1.5, 0.5) }) -> [RoutingPoint] {
        stride(from: 100, through: last, by: 100).map { s in
            let v = values((s - 1) / 500)
            return RoutingPoint(step: s, entropy: v.0, maxLoad: v.1, minLoad: v.2)
        }
    }

    /// A history where every stop clause holds: 4 evals improving by <= 0.01, flat train loss, steady routing.
    func stoppable(losses: [Double] = [5.0, 4.99, 4.985, 4.98]) -> GateHistory {
        let last = 500 * losses.count
        return GateHistory(evals: evals(losses), train: train(upTo: last), routing: routing(upTo: last))
    }

    func clause(_ d: StopDecision, _ name: String) -> GateClause { d.clauses.first { $0.name == name }! }
    func clause(_ d: PromoteDecision, _ name: String) -> GateClause { d.clauses.first { $0.name == name }! }

    // MARK: Stop rule

    func testStopWhenEveryClauseHolds() {
        let d = StageGate.stop(stoppable(), g)
        XCTAssertTrue(d.stop, d.reason)
        XCTAssertEqual(d.clauses.map(\.name), ["plateau", "flat", "routing"])
        XCTAssertTrue(d.reason.hasPrefix("stop: plateau"), d.reason)
        XCTAssertTrue(d.reason.contains("largest 0.0100 vs min_improvement 0.0200"), d.reason)
    }

    func testPlateauBoundary() {
        // Improvement on the best so far of 0.019 (<= 0.02: no improvement) vs 0.021 (an improvement).
        let below = StageGate.stop(stoppable(losses: [5.0, 4.995, 4.976, 4.976]), g)
        XCTAssertTrue(clause(below, "plateau").holds, below.reason)
        XCTAssertTrue(below.stop)
        let above = StageGate.stop(stoppable(losses: [5.0, 4.995, 4.974, 4.974]), g)
        XCTAssertFalse(clause(above, "plateau").holds, above.reason)
        XCTAssertFalse(above.stop)
        XCTAssertTrue(above.reason.hasPrefix("continue: plateau not met"), above.reason)
        // Only the last `patience` evals count: a big early drop does not matter.
        XCTAssertTrue(StageGate.stop(stoppable(losses: [6.0, 5.0, 4.99, 4.985, 4.98]), g).stop)
    }

    func testPlateauComparesWithTheBestSoFarAndNeedsPatiencePlusOneEvals() {
        // 5.1 -> 4.99 is a drop of 0.11 from the previous eval but only 0.01 below the best (5.0).
        XCTAssertTrue(clause(StageGate.stop(stoppable(losses: [5.0, 5.1, 4.99, 4.985]), g), "plateau").holds)
        let short = StageGate.stop(stoppable(losses: [5.0, 5.0, 5.0]), g)
        XCTAssertFalse(clause(short, "plateau").holds)
        XCTAssertFalse(clause(short, "routing").holds)
        XCTAssertFalse(short.stop)
        var p2 = g
        p2.patience = 2
        XCTAssertTrue(StageGate.stop(stoppable(losses: [5.0, 5.0, 5.0]), p2).stop)
    }

    func testFlatSlopeBoundary() {
        for (slope, flat) in [(0.039, true), (0.041, false), (-0.039, true), (-0.041, false), (0.0, true)] {
            var h = stoppable()
            h.train = train(upTo: 2000, slopePer1k: slope)
            let d = StageGate.stop(h, g)
            XCTAssertEqual(clause(d, "flat").holds, flat, "slope \(slope): \(d.reason)")
            XCTAssertEqual(d.stop, flat)
        }
    }

    func testFlatSlopeUsesOnlyTheLastWindow() {
        var h = stoppable()
        // Steep before step 1000, flat in the last slope_window = 1000 steps (1010 ... 2000).
        h.train = train(upTo: 1000, slopePer1k: -5) + train(upTo: 2000).filter { $0.step > 1000 }
        var wide = g
        wide.slopeWindow = 1500           // reaches into the steep part
        XCTAssertFalse(clause(StageGate.stop(h, wide), "flat").holds)
        XCTAssertTrue(clause(StageGate.stop(h, g), "flat").holds)
        var narrow = g
        narrow.slopeWindow = 20           // 2 points: too few for a slope
        XCTAssertFalse(clause(StageGate.stop(h, narrow), "flat").holds)
        XCTAssertEqual(StageGate.slope([0, 1, 2], [1, 3, 5]), 2)
    }

    func testRoutingPlateauBoundaryForEachMetric() {
        // The last 4 windows (evals 1..4) vary by 0.049 (< 0.05: plateau) or 0.051 (not).
        for metric in 0 ..< 3 {
            for (delta, plateau) in [(0.049, true), (0.051, false)] {
                var h = stoppable()
                h.routing = routing(upTo: 2000) { w in
                    let x = w == 2 ? delta : 0
                    return (0.9 + (metric == 0 ? x : 0), 1.5 + (metric == 1 ? x : 0), 0.5 + (metric == 2 ? x : 0))
                }
                let d = StageGate.stop(h, g)
                XCTAssertEqual(clause(d, "routing").holds, plateau, "metric \(metric) delta \(delta): \(d.reason)")
                XCTAssertEqual(d.stop, plateau)
            }
        }
    }

    func testRoutingOnlyOverTheSameEvalsAndDenseRunsPass() {
        var h = stoppable(losses: [6.0, 5.0, 4.99, 4.985, 4.98])
        // The first window (before eval 1) is very different; the last 4 are steady.
        h.routing = routing(upTo: 2500) { w in w == 0 ? (0.1, 9, 0) : (0.9, 1.5, 0.5) }
        XCTAssertTrue(clause(StageGate.stop(h, g), "routing").holds)
        h.routing = []
        let dense = StageGate.stop(h, g)
        XCTAssertTrue(clause(dense, "routing").holds, dense.reason)
        XCTAssertTrue(dense.stop)
    }

    // MARK: Promote rule

    /// Run and reference with the same train and routing histories; losses at steps 500 and 1000.
    func pair(run: Double, reference: Double) -> (GateHistory, GateHistory) {
        let ref = GateHistory(evals: evals([5.5, reference]), train: train(upTo: 1000), routing: routing(upTo: 1000))
        let r = GateHistory(evals: evals([5.5, run]), train: train(upTo: 1000), routing: routing(upTo: 1000))
        return (r, ref)
    }

    func testPromoteOnBetterLossBoundary() {
        let (yes, ref) = pair(run: 4.949, reference: 5.0)
        let d = StageGate.promote(yes, reference: ref, g)
        XCTAssertTrue(d.promote, d.reason)
        XCTAssertTrue(clause(d, "better loss").holds)
        XCTAssertEqual(d.step, 1000)
        XCTAssertEqual(d.evalLoss, 4.949)
        XCTAssertEqual(d.referenceEvalLoss, 5.0)
        let (no, ref2) = pair(run: 4.951, reference: 5.0)
        let n = StageGate.promote(no, reference: ref2, g)
        XCTAssertFalse(n.promote, n.reason)
        XCTAssertTrue(n.reason.hasPrefix("no promotion: better loss not met"), n.reason)
    }

    func testPromoteComparesAtTheLargestCommonEvalStep() {
        var (r, ref) = pair(run: 5.0, reference: 5.0)
        r.evals.append(EvalPoint(step: 1500, loss: 3.0))       // the reference never got there
        let d = StageGate.promote(r, reference: ref, g)
        XCTAssertEqual(d.step, 1000)
        XCTAssertFalse(d.promote, d.reason)
        ref.evals = [EvalPoint(step: 700, loss: 5)]
        let none = StageGate.promote(r, reference: ref, g)
        XCTAssertNil(none.step)
        XCTAssertFalse(none.promote)
    }

    func testPromoteOnEqualLossWithBetterRouting() {
        func decide(lossGap: Double, entropyGain: Double = 0, maxLoadDrop: Double = 0) -> PromoteDecision {
            var (r, ref) = pair(run: 5.0 - lossGap, reference: 5.0)
            r.routing = routing(upTo: 1000) { _ in (0.9 + entropyGain, 1.5 - maxLoadDrop, 0.5) }
            return StageGate.promote(r, reference: ref, g)
        }
        XCTAssertTrue(decide(lossGap: 0.009, entropyGain: 0.021).promote)
        XCTAssertFalse(decide(lossGap: 0.009, entropyGain: 0.019).promote)
        XCTAssertTrue(decide(lossGap: -0.009, maxLoadDrop: 0.101).promote)   // slightly worse loss is still "equal"
        XCTAssertFalse(decide(lossGap: 0.009, maxLoadDrop: 0.099).promote)
        XCTAssertFalse(decide(lossGap: 0.011, entropyGain: 0.5, maxLoadDrop: 0.5).promote)   // not equal
        XCTAssertFalse(decide(lossGap: -0.011, entropyGain: 0.5).promote)
        let d = decide(lossGap: 0, entropyGain: 0.021)
        XCTAssertTrue(clause(d, "equal loss, better routing").holds)
        XCTAssertTrue(d.reason.hasPrefix("promote: equal loss, better routing"), d.reason)
    }

    /// Train points every 10 steps up to `last` whose tokens/s cycle through `values` (a noisy machine).
    func noisyTrain(upTo last: Int, _ values: [Double]) -> [TrainPoint] {
        stride(from: 10, through: last, by: 10).enumerated().map {
            TrainPoint(step: $0.element, loss: 4, tokensPerSec: values[$0.offset % values.count])
        }
    }

    /// Different compute per token (run 1 GFLOP/token, reference 1.2): speed counts, beyond the spread.
    func testPromoteOnEqualLossWithHigherThroughput() {
        func decide(lossGap: Double, speedup: Double) -> PromoteDecision {
            var (r, ref) = pair(run: 5.0 - lossGap, reference: 5.0)
            r.train = train(upTo: 1000, tokensPerSec: 1000 * speedup)
            r.flopsPerToken = 1e9; ref.flopsPerToken = 1.2e9
            return StageGate.promote(r, reference: ref, g)
        }
        XCTAssertTrue(decide(lossGap: 0.005, speedup: 1.11).promote)
        XCTAssertFalse(decide(lossGap: 0.005, speedup: 1.09).promote)
        XCTAssertFalse(decide(lossGap: 0.02, speedup: 2).promote)
        XCTAssertTrue(clause(decide(lossGap: 0, speedup: 1.2), "equal loss, faster").holds)
    }

    /// The case: two configurations that differ only in moe.aux_loss_coef (the same model FLOPs
    /// per token), one 37.7% faster by chance. Equal compute per token: never promoted on speed.
    func testEqualFlopsPerTokenNeverPromotesOnSpeed() {
        var (r, ref) = pair(run: 5.0, reference: 5.0)
        r.train = train(upTo: 1000, tokensPerSec: 70061)
        ref.train = train(upTo: 1000, tokensPerSec: 50897)
        r.flopsPerToken = 2.949e8; ref.flopsPerToken = 2.949e8
        let d = StageGate.promote(r, reference: ref, g)
        XCTAssertFalse(d.promote, d.reason)
        let c = clause(d, "equal loss, faster")
        XCTAssertFalse(c.holds)
        XCTAssertTrue(c.detail.contains("same model FLOPs per token"), c.detail)
        // Unknown compute (0) does not promote on speed either.
        r.flopsPerToken = 0
        XCTAssertFalse(StageGate.promote(r, reference: ref, g).promote)
    }

    /// Different compute per token, a 20% higher median, but the runs' quartiles overlap (each run's
    /// tokens/s swings ±30% between intervals): within the spread, not promoted; the same medians with
    /// tight quartiles promote. Quartiles by linear interpolation, checked by hand below.
    func testSpeedCountsOnlyBeyondTheRunsSpread() {
        var (r, ref) = pair(run: 5.0, reference: 5.0)
        r.flopsPerToken = 1e9; ref.flopsPerToken = 1.2e9
        r.train = noisyTrain(upTo: 1000, [840, 1200, 1560])      // median 1200, quartiles 840 and 1560
        ref.train = noisyTrain(upTo: 1000, [700, 1000, 1300])    // median 1000, quartiles 700 and 1300
        let wide = StageGate.promote(r, reference: ref, g)
        XCTAssertFalse(wide.promote, wide.reason)
        XCTAssertTrue(clause(wide, "equal loss, faster").detail.contains("within the spread"))
        r.train = noisyTrain(upTo: 1000, [1190, 1200, 1210])
        ref.train = noisyTrain(upTo: 1000, [990, 1000, 1010])
        let tight = StageGate.promote(r, reference: ref, g)
        XCTAssertTrue(tight.promote, tight.reason)
        // Too few logged intervals to measure a spread: no decision on speed.
        r.train = noisyTrain(upTo: 30, [1190, 1200, 1210]); ref.train = noisyTrain(upTo: 30, [990, 1000, 1010])
        XCTAssertFalse(clause(StageGate.promote(r, reference: ref, g), "equal loss, faster").holds)
    }

    /// SpreadSummary against hand-computed linear-interpolation quantiles (numpy's default).
    func testSpreadSummaryQuantiles() throws {
        let s = try XCTUnwrap(SpreadSummary([4, 1, 3, 2]))     // sorted 1 2 3 4, positions 0.75, 1.5, 2.25
        XCTAssertEqual(s.median, 2.5); XCTAssertEqual(s.q25, 1.75); XCTAssertEqual(s.q75, 3.25)
        let one = try XCTUnwrap(SpreadSummary([7, .nan]))
        XCTAssertEqual([one.count, Int(one.median), Int(one.q25), Int(one.q75)], [1, 7, 7, 7])
        XCTAssertNil(SpreadSummary([]))
    }
}

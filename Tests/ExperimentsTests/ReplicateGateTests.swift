// Replicates: the statistics against hand computations, arms grouped by configuration, and the gate's
// noise-aware promotion and voted stop on constructed replicate histories whose answer is known.
import XCTest
import Configuration
import Experiments
import Training

final class ReplicateGateTests: XCTestCase {
    let g = GateConfig()      // promote_margin 0.05, noise_sigmas 2

    /// A run with evals at 500 and 1000 whose last eval loss is `final` (the first 0.5 higher).
    func run(final: Double) -> GateHistory {
        GateHistory(evals: [EvalPoint(step: 500, loss: final + 0.5), EvalPoint(step: 1000, loss: final)])
    }

    func testSummaryAndDifferenceAgainstHandComputation() {
        let s = ReplicateSummary([3.0, 3.1, 3.2])
        XCTAssertEqual(s.n, 3)
        XCTAssertEqual(s.mean, 3.1, accuracy: 1e-12)
        XCTAssertEqual(s.sd, 0.1, accuracy: 1e-12)                       // √((0.01 + 0 + 0.01) / 2)
        XCTAssertEqual(s.se, 0.1 / 3.0.squareRoot(), accuracy: 1e-12)
        XCTAssertEqual(ReplicateSummary([2.5]).sd, 0)
        let d = ReplicateDifference(ReplicateSummary([3.0, 3.1, 3.2]), ReplicateSummary([2.9, 3.0]))
        // pooled variance = (2·0.01 + 1·0.005) / 3; se = √(v/3 + v/2)
        let v = (2 * 0.01 + 1 * 0.005) / 3
        XCTAssertEqual(d.difference, 0.15, accuracy: 1e-12)
        XCTAssertEqual(d.standardError!, (v / 3 + v / 2).squareRoot(), accuracy: 1e-12)
        XCTAssertEqual(d.degreesOfFreedom, 3)
        XCTAssertNil(ReplicateDifference(ReplicateSummary([1]), ReplicateSummary([2])).standardError)
    }

    func testArmsGroupRunsEqualButForNameAndSeeds() {
        var a = RunConfig(); a.name = "p1-aux0.01-s1234"
        var b = a; b.name = "p1-aux0.01-s1235"; b.train.seed = 1235
        var c = a; c.name = "p1-aux0.01-s1236"; c.train.dataSeed = 99
        var d = a; d.name = "p1-aux0.02-s1234"; d.moe.auxLossCoef = 0.02
        let arms = Replicates.arms([a, b, c, d]) { $0 }
        XCTAssertEqual(arms.map { $0.map(\.name) }, [["p1-aux0.01-s1234", "p1-aux0.01-s1235", "p1-aux0.01-s1236"],
                                                     ["p1-aux0.02-s1234"]])
        XCTAssertEqual(Replicates.stem("p1-aux0.01-s1235"), "p1-aux0.01")
        XCTAssertEqual(Replicates.stem("a5-shared"), "a5-shared")
        XCTAssertEqual(Replicates.armName(arms[0].map(\.name)), "p1-aux0.01")
    }

    /// Improvement 0.06 > promote_margin 0.05, but the across-seed sd is 0.1: the standard error of the
    /// difference is 0.1·√(2/3) = 0.082, so 2 standard errors (0.163) are not beaten.
    func testAnImprovementWithinTheNoiseIsNotPromoted() {
        let reference = [3.0, 3.1, 3.2].map(run), arm = [2.94, 3.04, 3.14].map(run)
        let d = StageGate.promote(replicates: arm, reference: reference, g)
        XCTAssertFalse(d.promote, d.reason)
        XCTAssertEqual(d.noise!.difference, 0.06, accuracy: 1e-9)
        XCTAssertEqual(d.noise!.standardError!, 0.1 * (2.0 / 3).squareRoot(), accuracy: 1e-9)
        XCTAssertTrue(d.reason.contains("decided by the noise floor"), d.reason)
    }

    /// Improvement 0.1 with sd 0.005: far beyond both the margin and 2 standard errors (0.008).
    func testAClearImprovementIsPromoted() {
        let reference = [3.095, 3.1, 3.105].map(run), arm = [2.995, 3.0, 3.005].map(run)
        let d = StageGate.promote(replicates: arm, reference: reference, g)
        XCTAssertTrue(d.promote, d.reason)
        XCTAssertEqual(d.evalLoss!, 3.0, accuracy: 1e-9)
        XCTAssertEqual(d.referenceEvalLoss!, 3.1, accuracy: 1e-9)
    }

    /// One run per arm: exactly the single-run decision (no noise figure).
    func testSingleRunsDecideAsBefore() {
        for (a, b) in [(3.0, 3.06), (3.0, 3.04), (3.0, 3.0)] {
            let single = StageGate.promote(run(final: a), reference: run(final: b), g)
            let viaReplicates = StageGate.promote(replicates: [run(final: a)], reference: [run(final: b)], g)
            XCTAssertEqual(single, viaReplicates)
            XCTAssertNil(viaReplicates.noise)
        }
    }

    /// noise_sigmas 0 turns the noise clause off: the margin alone decides (the 0.06 case promotes).
    func testNoiseSigmasZeroIsTheMarginAlone() {
        var g0 = g; g0.noiseSigmas = 0
        let d = StageGate.promote(replicates: [2.94, 3.04, 3.14].map(run), reference: [3.0, 3.1, 3.2].map(run), g0)
        XCTAssertTrue(d.promote, d.reason)
    }

    func testStopIsVotedOverReplicates() {
        // A run that meets every stop clause (plateaued evals, flat loss, no routing = dense) and one that improves.
        let flat = GateHistory(evals: (1...4).map { EvalPoint(step: 500 * $0, loss: 4.0 - 0.001 * Double($0)) },
                               train: stride(from: 10, through: 2000, by: 10).map { TrainPoint(step: $0, loss: 4) })
        let improving = GateHistory(evals: (1...4).map { EvalPoint(step: 500 * $0, loss: 4.0 - 0.1 * Double($0)) },
                                    train: stride(from: 10, through: 2000, by: 10).map { TrainPoint(step: $0, loss: 4 - 0.0001 * Double($0)) })
        XCTAssertTrue(StageGate.stop(flat, g).stop)
        XCTAssertFalse(StageGate.stop(improving, g).stop)
        XCTAssertTrue(StageGate.stop(replicates: [flat, flat, improving], g).stop, "2 of 3")
        let d = StageGate.stop(replicates: [flat, improving, improving], g)
        XCTAssertFalse(d.stop, "1 of 3")
        XCTAssertTrue(d.reason.contains("1 of 3 replicates"), d.reason)
        XCTAssertFalse(StageGate.stop(replicates: [flat, improving], g).stop, "a tie is not a majority")
    }

    func testMeanHistoryAveragesCommonSteps() {
        let a = GateHistory(evals: [EvalPoint(step: 500, loss: 4), EvalPoint(step: 1000, loss: 3)])
        let b = GateHistory(evals: [EvalPoint(step: 500, loss: 5)])
        XCTAssertEqual(StageGate.meanHistory([a, b]).evals, [EvalPoint(step: 500, loss: 4.5)])
    }
}

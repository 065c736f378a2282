// The gate's one decision per run (StageGate.decide, what `moe-dist gate` prints): promote before stop,
// the trainer's stop, continue, and the replicates' vote, on constructed records whose answer is known.
import XCTest
import Configuration
import Experiments
import Training

final class GateDecisionTests: XCTestCase {
    /// A record named `name` with evals (step, loss) at 1000 tokens per step, stopped by its trainer at `stopped`.
    func record(_ name: String, seed: Int = 1234, evals: [(Int, Double)], stopped: Int? = nil) -> RunRecord {
        var c = RunConfig(); c.name = name; c.train.seed = seed
        var m = RunMetrics()
        m.evalStep = evals.map { Int64($0.0) }; m.evalTokens = evals.map { Int64($0.0 * 1000) }
        m.evalLoss = evals.map(\.1)
        m.stoppedStep = stopped; m.stoppedReason = stopped.map { _ in "no eval improvement" }
        return RunRecord(directory: "runs/" + name, config: c, metrics: m)
    }

    func testPromoteComparesTheLargestCommonEvalStep() {
        // promote_margin 0.05: 0.10 lower at step 1000, the last step both have (the run's 1500 is not compared).
        let run = record("a", evals: [(500, 3.0), (1000, 2.8), (1500, 2.7)])
        let ref = record("ref", evals: [(500, 3.0), (1000, 2.9)])
        let d = StageGate.decide(run, reference: ref)
        XCTAssertEqual(d.decision, "promote")
        XCTAssertEqual(d.decidedBy, "better loss")
        XCTAssertEqual(d.step, 1000); XCTAssertEqual(d.tokens, 1_000_000)
        XCTAssertEqual(d.evalLoss, 2.8); XCTAssertEqual(d.referenceEvalLoss, 2.9)
        XCTAssertEqual(d.lastEvalStep, 1500); XCTAssertEqual(d.lastEvalLoss, 2.7)
        XCTAssertEqual(d.replicates, 1); XCTAssertEqual(d.arm, "a")
        // Promotion wins over the trainer's stop.
        let stopped = record("a", evals: [(500, 3.0), (1000, 2.8)], stopped: 1000)
        XCTAssertEqual(StageGate.decide(stopped, reference: ref).decision, "promote")
    }

    func testTrainerStopElseContinue() {
        let ref = record("ref", evals: [(500, 3.0), (1000, 2.9)])
        let stopped = StageGate.decide(record("a", evals: [(500, 3.0), (1000, 2.9)], stopped: 1000), reference: ref)
        XCTAssertEqual(stopped.decision, "stop")
        XCTAssertEqual(stopped.decidedBy, "trainer stop")
        XCTAssertEqual(stopped.reason, "stopped by the trainer after step 1000: no eval improvement")
        XCTAssertEqual(stopped.stoppedStep, 1000)
        // Two evals are too few for the stop rule's patience: continue, giving both rules' reasons.
        let going = StageGate.decide(record("a", evals: [(500, 3.0), (1000, 2.9)]), reference: ref)
        XCTAssertEqual(going.decision, "continue")
        XCTAssertEqual(going.decidedBy, "none held")
        XCTAssertFalse(going.stopClauses.allSatisfy(\.holds))   // the stop rule needs every clause
        XCTAssertTrue(going.reason.contains("; "), going.reason)
    }

    func testReplicatesShareTheArmsDecisionAndVoteOnTrainerStops() {
        let ref = record("ref", evals: [(500, 3.0), (1000, 2.9)])
        func arm(stopped: Int) -> [RunRecord] {
            (0 ..< 3).map { i in
                record("p1-s\(1234 + i)", seed: 1234 + i, evals: [(500, 3.0), (1000, 2.9)], stopped: i < stopped ? 1000 : nil)
            }
        }
        let two = StageGate.decide(arm: arm(stopped: 2), reference: [ref])
        XCTAssertEqual(two.map(\.decision), ["stop", "stop", "stop"])
        XCTAssertEqual(two.map(\.dir), ["runs/p1-s1234", "runs/p1-s1235", "runs/p1-s1236"])
        XCTAssertEqual(two[0].decidedBy, "stop vote")
        XCTAssertEqual(two[0].arm, "p1"); XCTAssertEqual(two[0].replicates, 3); XCTAssertEqual(two[0].referenceReplicates, 1)
        XCTAssertEqual(two[0].stopClauses[0].name, "vote")
        XCTAssertTrue(two[0].stopClauses[0].detail.hasPrefix("2 of 3 replicates"), two[0].stopClauses[0].detail)
        // One stop of three is no majority.
        let one = StageGate.decide(arm: arm(stopped: 1), reference: [ref])
        XCTAssertEqual(one.map(\.decision), ["continue", "continue", "continue"])
        XCTAssertFalse(one[0].stopClauses[0].holds)
    }
}

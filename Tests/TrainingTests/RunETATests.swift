// The training ETA (RunETA.swift) against brute-force counts and a hand computation.
import XCTest
import Training

final class RunETATests: XCTestCase {
    /// Remaining evaluations / checkpoints: every multiple of the interval after `step`, plus the last step.
    func testRemainingEventsAgreeWithCountingSteps() {
        for total in 1 ... 60 { for interval in 1 ... 13 { for step in 0 ... total {
            let brute = (step + 1 ..< total + 1).filter { $0 % interval == 0 || $0 == total }.count
            XCTAssertEqual(RunETA.remaining(after: step, total: total, every: interval), brute, "\(total) \(interval) \(step)")
        } } }
    }

    /// 1000 steps, eval every 100, checkpoint every 250; after 100 steps at 0.5 s, one eval of 4 s and no
    /// checkpoint yet: 900 · 0.5 + 9 evals · 4 s = 486 s; after a 10 s checkpoint, + 4 checkpoints · 10 s.
    func testETAIncludesEvaluationsAndCheckpoints() throws {
        var eta = RunETA(totalSteps: 1000, evalInterval: 100, checkpointInterval: 250, evalTokens: 3000, evaluates: true)
        XCTAssertNil(eta.seconds(after: 0))
        for _ in 0 ..< 100 { eta.addSteps(1, tokens: 1000, seconds: 0.5) }
        // Before any evaluation: estimated as a forward pass (a third of a step's work per token) over 3000 tokens.
        let estimatedEval: Double = 3000.0 / 3 * 0.5 / 1000      // tokens / 3 at the training seconds per token
        let expected: Double = 900 * 0.5 + 9 * estimatedEval      // evals at 200, 300, ..., 1000
        XCTAssertEqual(try XCTUnwrap(eta.seconds(after: 100)), expected, accuracy: 1e-9)
        eta.addEval(seconds: 4)
        XCTAssertEqual(try XCTUnwrap(eta.seconds(after: 100)), 486.0, accuracy: 1e-9)          // 900 · 0.5 + 9 · 4
        eta.addCheckpoint(seconds: 10)
        XCTAssertEqual(try XCTUnwrap(eta.seconds(after: 100)), 526.0, accuracy: 1e-9)          // + 4 · 10
        // Without validation data there is no evaluation to wait for.
        var noEval = RunETA(totalSteps: 10, evalInterval: 5, checkpointInterval: 100, evalTokens: 100, evaluates: false)
        noEval.addSteps(2, tokens: 10, seconds: 2)
        XCTAssertEqual(try XCTUnwrap(noEval.seconds(after: 2)), 8, accuracy: 1e-9)
    }
}

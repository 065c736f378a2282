// The dense control (moe.num_experts = 0, SPEC section 2) through Trainer and TrainingSession: the model
// tests run the dense model alone, which never reached the step report that crashed the release build.
import XCTest
import Foundation
import Collectives
import Configuration
import Model
import Training
import TestSupport

final class DenseTrainerTests: XCTestCase {
    /// Steps of the dense model on 1 and 2 (thread) ranks: every report is sized for R iterations, losses
    /// are finite, equal across the world sizes (to 1e-5 relative: only summation order differs), and fall.
    func testDenseModelTrainsThroughTrainer() throws {
        let (c, data) = try tinyRun(["moe.num_experts=0", "train.global_batch=8"])
        XCTAssertTrue(c.moe.isDense)
        let one = try train(c, data, worldSize: 1), two = try train(c, data, worldSize: 2)
        for r in one {
            XCTAssertTrue(r.loss.isFinite && r.gradNorm.isFinite, "step \(r.step): loss \(r.loss)")
            XCTAssertFalse(r.skipped)
            XCTAssertEqual(r.dropped.count, c.model.depth)
            XCTAssertEqual(r.routedTokens.count, c.model.depth)
            XCTAssertEqual(r.counts.count, 0)
            XCTAssertEqual(r.timing.count, Phase.allCases.count)
        }
        assertClose(two.map(\.loss), one.map(\.loss), rtol: 1e-5, atol: 0, "dense losses at 2 ranks")
        XCTAssertLessThan(one.last!.loss, one.first!.loss)
    }

    /// 10 steps on W thread ranks, with the context the CLI builds for a dense run; rank 0's reports.
    private func train(_ config: RunConfig, _ data: TrainingData, worldSize W: Int) throws -> [StepReport] {
        final class Box: @unchecked Sendable { var reports: [StepReport] = [] }
        let box = Box()
        try ThreadWorld.run(size: W) { world in
            var c = config
            c.train.microBatch = c.train.globalBatch / W
            try validate(c, worldSize: W)
            let trainer = try Trainer(config: c, ctx: try ParallelContext.make(world: world, config: c), train: data.train)
            let reports = (0 ..< 10).map { _ in trainer.trainStep() }
            if world.rank == 0 { box.reports = reports }
        }
        return box.reports
    }

    /// A dense run through TrainingSession: history, evaluation and a checkpoint, then a resume from it.
    func testDenseSessionWritesAndResumes() throws {
        var (c, data) = try tinyRun(["moe.num_experts=0", "train.max_steps=6", "train.log_interval=2",
                                     "train.eval_interval=3", "train.eval_tokens=256", "train.checkpoint_interval=3"])
        c.train.microBatch = c.train.globalBatch
        let dir = NSTemporaryDirectory() + "moe-dist-dense-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let first = try TrainingSession(config: c, ctx: .single(numExperts: 0), data: data, runDirectory: dir) { _ in }
        let last = try XCTUnwrap(try first.run())
        XCTAssertEqual(last.step, 6)
        XCTAssertTrue(last.loss.isFinite)
        let ck = Checkpoint.path(runDirectory: dir, step: 3)
        try Checkpoint.verify(ck)
        let again = try TrainingSession(config: c, ctx: .single(numExperts: 0), data: data, runDirectory: dir) { _ in }
        try again.resume(from: ck)
        let resumed = try XCTUnwrap(try again.run())
        XCTAssertEqual(resumed.step, 6)
        // Resumed from step 3 with the same data position: the same last step, to summation order.
        assertClose([resumed.loss], [last.loss], rtol: 1e-6, atol: 0, "loss of step 6 after resuming at 3")
    }
}

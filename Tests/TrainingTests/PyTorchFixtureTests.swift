// The optimizer, the learning-rate schedule, clipping and initialisation against values computed once with
// PyTorch 2.13 (torch.optim.AdamW, clip_grad_norm_, LinearLR + CosineAnnealingLR) and an independent
// Python version of the SPEC section 2 initialisation: Tests/Fixtures/training_fixtures.json, written by
// Tests/Fixtures/make_training_fixtures.py. Tolerances: the schedule 1e-12 relative (Double); AdamW
// parameters 2e-6 relative + 1e-8 (Float32 in both, operations in a different order); gradient norms
// 1e-6 relative; initial values 1e-6 relative (the same libm log/cos in Double, rounded to Float).
// Also: the reported gradient norm under expert data parallelism counts every expert once.
import XCTest
import Foundation
import Collectives
import Configuration
import Model
import TestSupport
@testable import Training

final class PyTorchFixtureTests: XCTestCase {
    private func fixtures() throws -> [String: Any] {
        let path = TestPaths.repoRoot + "/Tests/Fixtures/training_fixtures.json"
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        return try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func testLearningRateScheduleMatchesPyTorch() throws {
        for case let s as [String: Any] in try XCTUnwrap(fixtures()["schedule"] as? [Any]) {
            var t = TrainConfig()
            t.lr = s["peak"] as! Double
            t.minLrRatio = s["min_lr_ratio"] as! Double
            t.warmupSteps = s["warmup_steps"] as! Int
            let total = s["total_steps"] as! Int
            let schedule = LearningRateSchedule(t, totalSteps: total)
            let ours = (0 ..< total).map { schedule($0) }
            assertClose(ours, s["lr"] as! [Double], rtol: 1e-12, atol: 0, "warmup \(t.warmupSteps), total \(total)")
        }
    }

    func testAdamWWithClippingMatchesPyTorch() throws {
        let f = try XCTUnwrap(fixtures()["adamw"] as? [String: Any])
        let shapes = f["shapes"] as! [String: [Int]]
        let names = ["blocks/0/wq", "blocks/0/attn_norm", "depth_embed"]
        let tensors = [ModelTensor(.wq, 0, shapes[names[0]]!), ModelTensor(.attnNorm, 0, shapes[names[1]]!),
                       ModelTensor(.depthEmbed, shapes[names[2]]!)]
        XCTAssertEqual(tensors.map(\.path), names)
        let store = ParameterStore(tensors: tensors, localExperts: 0 ..< 0)
        XCTAssertEqual(names.map { store.info($0).decays }, [true, false, false], "weight-decay exclusions")
        let initial = f["initial"] as! [String: [Double]]
        for n in names { for (i, v) in initial[n]!.enumerated() { (store.params + store.info(n).offset)[i] = Float(v) } }
        var t = TrainConfig()
        let betas = f["betas"] as! [Double]
        t.beta1 = betas[0]; t.beta2 = betas[1]; t.eps = f["eps"] as! Double; t.weightDecay = f["weight_decay"] as! Double
        let adamw = AdamW(t)
        let steps = f["steps"] as! [[String: Any]]
        for (i, step) in steps.enumerated() {
            let grads = step["grads"] as! [String: [Double]]
            for n in names { for (j, v) in grads[n]!.enumerated() { (store.grads + store.info(n).offset)[j] = Float(v) } }
            let norm = store.gradSquaredNorm(0 ..< store.count).squareRoot()
            assertClose(norm, step["grad_norm"] as! Double, rtol: 1e-6, atol: 0, "step \(i) gradient norm")
            let scale = GradientClipping.scale(gradNorm: norm, maxNorm: f["grad_clip"] as! Double)
            adamw.update(store, lr: step["lr"] as! Double, t: i + 1, gradScale: scale)
            let after = step["params_after"] as! [String: [Double]]
            for n in names {
                let ours = Array(UnsafeBufferPointer(start: store.params + store.info(n).offset, count: store.info(n).count))
                assertClose(ours, after[n]!, rtol: 2e-6, atol: 1e-8, "step \(i) \(n)")
            }
        }
    }

    func testInitialisationMatchesTheIndependentImplementation() throws {
        let f = try XCTUnwrap(fixtures()["init"] as? [String: Any])
        var c = RunConfig()
        c.model.dModel = f["d_model"] as! Int; c.model.nHeads = 2; c.model.vocabSize = f["vocab_size"] as! Int
        c.model.depth = f["depth"] as! Int; c.moe.numExperts = f["num_experts"] as! Int; c.moe.dFF = f["d_ff"] as! Int
        let values = f["values"] as! [String: [Double]]
        var first: [Float] = []
        // One thread, and several drawing the independent streams at once: the same values, bit for bit.
        for workers in [1, 3] {
            let store = ParameterStore(tensors: ModelTensors.list(c), localExperts: 0 ..< c.moe.numExperts)
            store.initialize(seed: f["seed"] as! Int, depth: c.model.depth, workers: workers)
            XCTAssertEqual(Set(values.keys), Set(store.infos.map(\.path)))
            for p in store.infos {
                let ours = Array(UnsafeBufferPointer(start: store.params + p.offset, count: p.count))
                assertClose(ours, values[p.path]!, rtol: 1e-6, atol: 1e-12, "\(p.path), \(workers) workers")
            }
            let all = Array(UnsafeBufferPointer(start: store.params, count: store.count))
            if first.isEmpty { first = all } else { XCTAssertEqual(all.map(\.bitPattern), first.map(\.bitPattern), "\(workers) workers") }
        }
    }

    /// Under expert data parallelism the reported norm is ‖g‖ over every trunk tensor once and every expert
    /// once: the sum of squares of the reduced gradients, trunk from rank 0 and each expert slice from its
    /// first copy, computed here from the stores after the step.
    func testGradientNormCountsEveryExpertOnce() throws {
        let (c, data) = try tinyRun(["moe.num_experts=4", "train.global_batch=4"])
        for (W, G) in [(2, 1), (4, 2)] {
            final class Sums: @unchecked Sendable {
                let lock = NSLock(); var squares = 0.0; var reported = 0.0
            }
            let sums = Sums()
            try ThreadWorld.run(size: W) { world in
                var cc = c
                cc.train.microBatch = c.train.globalBatch / W
                let ctx = try ParallelContext.make(world: world, expertParallel: G, numExperts: cc.moe.numExperts)
                let trainer = try Trainer(config: cc, ctx: ctx, train: data.train)
                let report = trainer.trainStep()
                let s = trainer.model.store
                var mine = 0.0
                if world.rank == 0 { mine += s.gradSquaredNorm(0 ..< s.trunkCount) }
                if world.rank < G { mine += s.gradSquaredNorm(s.trunkCount ..< s.count) }
                sums.lock.lock(); sums.squares += mine; if world.rank == 0 { sums.reported = report.gradNorm }; sums.lock.unlock()
            }
            assertClose(sums.reported, sums.squares.squareRoot(), rtol: 1e-9, atol: 0, "W=\(W) G=\(G)")
        }
    }
}

// Evaluation (SPEC section 5) equals the mean NLL computed independently in the test: the test cuts
// the windows itself, scores each window alone with its own softmax over the model's logits
// (through a batch of one sequence), for M not a multiple of T, at world sizes 1 and 2.
import XCTest
import Collectives
import Configuration
import DataPipeline
import Model
import Training
import TestSupport

final class EvaluatorTests: XCTestCase {
    func testEvalMatchesIndependentMeanNLL() throws {
        let (c, data) = try tinyRun(["moe.capacity_factor=0.5"])    // eval must ignore the capacity limit
        let valid = data.valid!
        let M = 5 * c.model.seqLen + 7                                  // not a multiple of T
        let T = c.model.seqLen
        // Reference: every window alone, dropless, NLL summed in Double.
        let model = RecurrentMoEModel(config: c, ctx: .single(numExperts: c.moe.numExperts))
        var tokens = [Int32](repeating: 0, count: M)
        tokens.withUnsafeMutableBufferPointer { valid.copyTokens(0 ..< M, into: $0.baseAddress!) }
        var sum = 0.0, scored = 0
        var s = 0
        while s < M - 1 {
            let L = min(T, M - 1 - s)
            let x = Array(tokens[s ..< s + L]), y = Array(tokens[s + 1 ..< s + L + 1])
            let r = model.step(inputs: x, targets: y, B: 1, T: L, scales: LossScales(ce: 1, aux: 0, z: 0),
                               applyCapacity: false, backward: false)
            sum += r.ceSum; scored += L; s += T
        }
        let reference = sum / Double(scored)
        XCTAssertEqual(scored, M - 1)

        for W in [1, 2] {
            final class Box: @unchecked Sendable { var result: EvalResult? }
            let box = Box()
            try ThreadWorld.run(size: W) { world in
                let ctx = try ParallelContext.make(world: world, expertParallel: W, numExperts: c.moe.numExperts)
                let m = RecurrentMoEModel(config: c, ctx: ctx)
                let r = Evaluator.evaluate(model: m, tokens: valid, maxTokens: M, batch: 3)
                if world.rank == 0 { box.result = r }
            }
            let r = box.result!
            XCTAssertEqual(r.scored, M - 1)
            assertClose(r.loss, reference, rtol: 1e-6, atol: 0, "eval loss at world \(W)")
            assertClose(r.ppl, exp(reference), rtol: 1e-6, atol: 0)
        }
    }
}

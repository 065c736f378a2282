// Evaluation (SPEC section 5): score the first M tokens of a split in windows
// starting at 0, T, 2T, …; window inputs x[s ..< min(s+T, M−1)], targets the
// next tokens; M − 1 tokens scored in all. Dropless routing, so the result does
// not depend on batching or world size (up to summation order).
//
// Work split: full windows go round-robin in rounds of micro_batch · W windows,
// rank r taking a contiguous share of each round; the last partial window runs
// on rank 0. Every rank calls the model in every round (with B = 0 when it has
// nothing), because the MoE layer's exchanges need all ranks.
import Foundation
import DataPipeline
import Model

public struct EvalResult: Codable, Sendable, Equatable {
    /// Mean NLL of the scored tokens (cross-entropy only).
    public var loss: Double
    public var ppl: Double
    /// Tokens scored (M − 1).
    public var scored: Int
}

public enum Evaluator {
    /// `progress(done, total)` is called after every round with the targets scored so far (on every rank).
    public static func evaluate(model: RecurrentMoEModel, tokens: TokenSource, maxTokens: Int?, batch: Int,
                                progress: ((Int, Int) -> Void)? = nil) -> EvalResult {
        let T = model.config.model.seqLen
        let world = model.ctx.world
        let W = world.size, rank = world.rank
        let M = min(maxTokens ?? tokens.count, tokens.count)
        let scored = max(M - 1, 0)
        let full = scored / T, tail = scored % T
        let scales = LossScales(ce: 1, aux: 0, z: 0)
        var window = [Int32](repeating: 0, count: T + 1)
        var inputs = [Int32](repeating: 0, count: batch * T), targets = inputs
        var sum = 0.0

        func run(B: Int, T: Int) {
            let r = inputs.withUnsafeBufferPointer { x in
                targets.withUnsafeBufferPointer { y in
                    model.step(inputs: x.baseAddress!, targets: y.baseAddress!, B: B, T: T, scales: scales,
                               applyCapacity: false, backward: false)
                }
            }
            sum += r.ceSum
        }
        func load(slot: Int, window w: Int, length L: Int) {
            window.withUnsafeMutableBufferPointer { tokens.copyTokens(w * T ..< w * T + L + 1, into: $0.baseAddress!) }
            for t in 0 ..< L { inputs[slot * L + t] = window[t]; targets[slot * L + t] = window[t + 1] }
        }

        let perRound = batch * W
        let rounds = (full + perRound - 1) / perRound
        for round in 0 ..< rounds {
            let first = round * perRound + rank * batch
            let B = max(0, min(batch, full - first))
            for s in 0 ..< B { load(slot: s, window: first + s, length: T) }
            run(B: B, T: T)
            progress?(min((round + 1) * perRound, full) * T, scored)
        }
        if tail > 0 {
            let B = rank == 0 ? 1 : 0
            if B == 1 { load(slot: 0, window: full, length: tail) }
            run(B: B, T: tail)
        }
        progress?(scored, scored)
        var total = [sum]
        total.withUnsafeMutableBufferPointer { world.allReduceSum($0) }
        let loss = scored > 0 ? total[0] / Double(scored) : .nan
        return EvalResult(loss: loss, ppl: exp(loss), scored: scored)
    }
}

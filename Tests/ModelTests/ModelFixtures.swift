import Configuration
import Model

/// A model small enough for finite differences in a debug build.
func tinyConfig(_ edit: (inout RunConfig) -> Void = { _ in }) -> RunConfig {
    var c = RunConfig()
    c.model.vocabSize = 23
    c.model.dModel = 16
    c.model.nHeads = 2
    c.model.seqLen = 8
    c.model.depth = 2
    c.moe.numExperts = 4
    c.moe.topK = 2
    c.moe.dFF = 12
    c.moe.auxLossCoef = 0.05
    c.moe.zLossCoef = 0.01
    c.train.seed = 99
    c.train.maxSteps = 1
    edit(&c)
    return c
}

/// Deterministic token batch [B·T] in 0 ..< V.
func tokenBatch(B: Int, T: Int, V: Int, seed: UInt64) -> (inputs: [Int32], targets: [Int32]) {
    var rng = SplitMix64(seed: seed)
    let x = (0 ..< B * T + 1).map { _ in Int32(rng.next() % UInt64(V)) }
    return (Array(x[0 ..< B * T]), Array(x[1 ... B * T]))
}

// The inference model (key/value cache per recurrent iteration) against the training model's forward pass,
// an independent implementation: the logits of every position, computed one token at a time from the cache,
// equal those of one full forward over the same context within 1e-5 (float32 summation order differs:
// the training model batches, splits and packs its products differently), for every architecture and
// routing variant. Also: sliding past model.seq_len and the sampler's determinism.
import XCTest
import Configuration
import Kernels
import Model
import TestSupport

final class InferenceTests: XCTestCase {
    static let variants: [(String, (inout RunConfig) -> Void)] = [
        ("default", { _ in }),
        ("indexed trunk and experts, untied, no depth embedding", {
            $0.model.trunk = .indexed; $0.moe.experts = .indexed; $0.model.tieEmbeddings = false; $0.model.depthEmbedding = false
        }),
        ("swiglu top-1", { $0.moe.activation = .swiglu; $0.moe.topK = 1 }),
        ("sigmoid with selection bias, unnormalised gates", {
            $0.moe.routerScore = .sigmoid; $0.moe.routerBiasRate = 0.01; $0.moe.normalizeGates = false
        }),
        ("per-iteration routers with bias", { $0.moe.routers = .perIteration; $0.moe.routerBiasRate = 0.01; $0.model.depth = 3 }),
        ("dense swiglu", { $0.moe.numExperts = 0; $0.moe.activation = .swiglu }),
    ]

    /// A training model with random parameters (and random selection biases) and an inference model holding
    /// the same values.
    private func pair(_ edit: (inout RunConfig) -> Void) -> (RecurrentMoEModel, InferenceModel) {
        let c = tinyConfig { $0.model.seqLen = 12; $0.model.vocabSize = 29; edit(&$0) }
        let train = RecurrentMoEModel(config: c, ctx: .single(numExperts: c.moe.numExperts))
        let infer = InferenceModel(config: c)
        XCTAssertEqual(train.store.count, infer.store.count)
        infer.store.params.update(from: train.store.params, count: train.store.count)
        // Depth embeddings start at 0: give them values so that the test sees them.
        if c.model.depthEmbedding {
            let de = infer.store.params + infer.store.info("depth_embed").offset, n = infer.store.info("depth_embed").count
            for i in 0 ..< n { de[i] = Float((i * 37) % 11) * 0.01 - 0.05 }
            (train.store.params + train.store.info("depth_embed").offset).update(from: de, count: n)
        }
        let q = infer.currentSelectionBias.count
        if q > 0 {
            let b = (0 ..< q).map { Float(($0 * 7) % 5) * 0.02 - 0.04 }
            infer.setSelectionBias(b)
            b.withUnsafeBufferPointer { train.selectionBias.pointer.update(from: $0.baseAddress!, count: q) }
        }
        return (train, infer)
    }

    func testCachedLogitsEqualFullForwardAtEveryPosition() {
        for (name, edit) in Self.variants {
            let (train, infer) = pair(edit)
            let c = train.config, T = c.model.seqLen, V = c.model.vocabSize
            let (x, y) = tokenBatch(B: 1, T: T, V: V, seed: 5)
            _ = x.withUnsafeBufferPointer { xp in
                y.withUnsafeBufferPointer { yp in
                    train.step(inputs: xp.baseAddress!, targets: yp.baseAddress!, B: 1, T: T,
                               scales: LossScales(ce: 1, aux: 0, z: 0), applyCapacity: false, backward: false)
                }
            }
            let full = Array(UnsafeBufferPointer(start: train.lastLogits, count: T * V))
            infer.cache.reset()
            var cached: [Float] = []
            for t in 0 ..< T { cached += Array(infer.run([x[t]])) }
            assertClose(cached, full, rtol: 0, atol: 1e-5, "\(name): one token at a time from the cache")
            infer.cache.reset()
            let prefill = Array(infer.run(Array(x[0 ..< 5]), logitRows: 5)) + Array(infer.run(Array(x[5...]), logitRows: T - 5))
            assertClose(prefill, full, rtol: 0, atol: 1e-5, "\(name): two chunks")
        }
    }

    /// Past model.seq_len the window slides to its newest seq_len/2 tokens: the next token's logits are those
    /// of a fresh forward over exactly that window; cached and uncached generation agree.
    func testSlidingWindowPastSeqLen() {
        let (_, infer) = pair { _ in }
        let T = infer.contextLimit, V = infer.config.model.vocabSize
        let gen = TokenGenerator(model: infer)
        let prompt = tokenBatch(B: 1, T: T - 3, V: V, seed: 9).inputs
        var s1 = Sampler(SamplingOptions(temperature: 0))
        let cached = gen.generate(prompt: prompt, maxNewTokens: 2 * T + 3, sampler: &s1, cached: true)
        var s2 = Sampler(SamplingOptions(temperature: 0))
        let uncached = gen.generate(prompt: prompt, maxNewTokens: 2 * T + 3, sampler: &s2, cached: false)
        XCTAssertEqual(cached, uncached)
        XCTAssertEqual(cached.count, 2 * T + 3)
        // Replay by hand: the token after the first slide comes from the window of the newest T/2 tokens.
        let all = prompt + cached
        let slideAt = T - prompt.count          // new tokens emitted when the window was full
        let window = Array(all[0 ..< prompt.count + slideAt + 1].suffix(T / 2))
        infer.cache.reset()
        let logits = infer.run(window)
        var best = 0
        for i in 0 ..< V where logits[i] > logits[best] { best = i }
        XCTAssertEqual(Int32(best), cached[slideAt + 1])
        // A prompt longer than seq_len starts from its last seq_len tokens.
        XCTAssertEqual(gen.initialWindow(Array(repeating: 1, count: 3) + Array(0 ..< Int32(T))), Array(0 ..< Int32(T)))
    }

    func testSamplingIsDeterministicForASeed() {
        let (_, infer) = pair { $0.moe.activation = .swiglu }
        let gen = TokenGenerator(model: infer)
        func draw(_ o: SamplingOptions) -> [Int32] {
            var s = Sampler(o)
            return gen.generate(prompt: [1, 2, 3], maxNewTokens: 20, sampler: &s)
        }
        XCTAssertEqual(draw(SamplingOptions(temperature: 0)), draw(SamplingOptions(temperature: 0, seed: 77)))
        let a = draw(SamplingOptions(temperature: 1.5, topK: 10, topP: 0.9, seed: 3))
        XCTAssertEqual(a, draw(SamplingOptions(temperature: 1.5, topK: 10, topP: 0.9, seed: 3)))
        XCTAssertNotEqual(a, draw(SamplingOptions(temperature: 1.5, topK: 10, topP: 0.9, seed: 4)))
    }

    /// top-k 1 is greedy; top-p keeps the smallest set reaching p.
    func testSamplerTruncation() {
        let logits: [Float] = [0.1, 2.0, 1.9, -1, 0]
        logits.withUnsafeBufferPointer { lp in
            var s = Sampler(SamplingOptions(temperature: 5, topK: 1, seed: 1))
            for _ in 0 ..< 20 { XCTAssertEqual(s.next(lp), 1) }
            // softmax(x/5) of the two largest ≈ 0.25 + 0.25: top-p 0.3 needs both, nothing else.
            var p = Sampler(SamplingOptions(temperature: 5, topP: 0.3, seed: 2))
            let drawn = Set((0 ..< 200).map { _ in p.next(lp) })
            XCTAssertEqual(drawn, [1, 2])
        }
    }
}

// The built-in training data used when no `data.train` is given: a sparse random
// order-2 Markov chain whose structure a small model learns in a few hundred steps,
// and whose entropy rate is known exactly, so a test or a reader knows what loss is
// achievable (SPEC section 1, data.*).
//
// The chain, fixed by (vocabSize, seed):
// - every token `b` has K = 4 distinct successors S(b) (the first is b's successor on a
//   random cycle through the whole vocabulary, so every token is reachable);
// - in context (a, b) (a two back, b last) the next token is S(b)[σ_ab(j)] with probability
//   p_j, p = (0.55, 0.25, 0.12, 0.08), where σ_ab is a permutation of 0..<K drawn from a
//   hash of (seed, a, b): which successor is likely depends on the token two back.
// Every context's distribution is a permutation of p over distinct tokens, so the entropy
// rate is exactly H(p) = 1.1319 nats/token, whatever the stationary distribution; a model
// that only learns bigrams reaches about ln K = 1.386 at best; one that learns nothing beyond
// unigram frequencies stays near ln V (5.5 nats for V = 256).

import Foundation

public enum GeneratedCorpus {
    /// Vocabulary used when the configuration leaves `model.vocab_size` at 0.
    public static let defaultVocabSize = 256
    /// Successors per token (K).
    public static let successorsPerToken = 4
    /// The next-token probabilities in every context, in decreasing order (p).
    public static let successorProbabilities: [Double] = [0.55, 0.25, 0.12, 0.08]

    /// Exact entropy rate of the chain, nats per token: `H(p) = −Σ p_j ln p_j` ≈ 1.1319.
    /// This is the lowest achievable expected cross-entropy on a long sample.
    public static var entropyRate: Double { successorProbabilities.reduce(0) { $0 - $1 * log($1) } }

    /// `tokens` ids from the chain fixed by (vocabSize, seed). `stream` picks an independent
    /// sample path of the SAME chain: 0 for training, 1 for validation (then train and
    /// validation share their statistics, as two halves of one corpus would).
    public static func make(vocabSize: Int = defaultVocabSize, tokens: Int, seed: UInt64,
                            stream: UInt64 = 0) -> InMemoryTokens {
        precondition(vocabSize >= successorsPerToken && vocabSize <= Int(Int32.max),
                     "GeneratedCorpus: vocabSize must be in \(successorsPerToken) ... \(Int32.max), got \(vocabSize)")
        precondition(tokens >= 0, "GeneratedCorpus: tokens must be >= 0, got \(tokens)")
        let V = vocabSize, K = successorsPerToken
        let chainSeed = mix64(seed ^ 0x6368_6169_6e00_0000)          // "chain"

        // Successor table S[b*K + i]: slot 0 on a random cycle, the others distinct random tokens.
        var rng = SplitMix64Stream(seed: chainSeed)
        var order = Array(0 ..< V)
        for i in stride(from: V - 1, to: 0, by: -1) { order.swapAt(i, rng.nextInt(upTo: i + 1)) }
        var successors = [Int32](repeating: 0, count: V * K)
        for (i, b) in order.enumerated() {
            var chosen = [order[(i + 1) % V]]
            while chosen.count < K {
                let c = rng.nextInt(upTo: V)
                if !chosen.contains(c) { chosen.append(c) }
            }
            for j in 0 ..< K { successors[b * K + j] = Int32(chosen[j]) }
        }

        // Cumulative p for sampling a rank j.
        var cumulative = [Double](); var acc = 0.0
        for p in successorProbabilities { acc += p; cumulative.append(acc) }
        cumulative[K - 1] = 1.0

        var sampler = SplitMix64Stream(seed: mix64(seed ^ 0x7374_7265_616d_0000 &+ mix64(stream)))   // "stream"
        var out = [Int32](repeating: 0, count: tokens)
        var a = sampler.nextInt(upTo: V), b = a
        var perm = [Int](repeating: 0, count: K)
        for t in 0 ..< tokens {
            if t > 0 {
                // σ_ab from a hash of the context, then the successor of rank j.
                var h = SplitMix64Stream(seed: chainSeed &+ mix64(UInt64(a) &* UInt64(V) &+ UInt64(b)))
                for i in 0 ..< K { perm[i] = i }
                for i in stride(from: K - 1, to: 0, by: -1) { perm.swapAt(i, h.nextInt(upTo: i + 1)) }
                let u = sampler.nextUnitDouble()
                var j = 0
                while u >= cumulative[j] { j += 1 }
                let next = Int(successors[b * K + perm[j]])
                a = b; b = next
            }
            out[t] = Int32(b)
        }
        return InMemoryTokens(out, vocabSize: V)
    }

    /// Plug-in entropy of the token frequencies of `s`, in nats: the loss of the best
    /// context-free predictor.
    public static func unigramEntropy(_ s: TokenSource) -> Double {
        conditionalEntropy(s, order: 0)
    }

    /// Plug-in estimate of H(X_t | X_{t−order} ..< X_t) over `s`, in nats (order 0, 1 or 2;
    /// 0 is the unigram entropy). Biased low when contexts are seen few times.
    public static func conditionalEntropy(_ s: TokenSource, order: Int) -> Double {
        precondition((0 ... 2).contains(order), "conditionalEntropy: order must be 0, 1 or 2")
        let n = s.count
        guard n > order else { return 0 }
        var x = [Int32](repeating: 0, count: n)
        x.withUnsafeMutableBufferPointer { s.copyTokens(0 ..< n, into: $0.baseAddress!) }
        let V = s.vocabSize
        var joint: [Int: Int] = [:], context: [Int: Int] = [:]
        for t in order ..< n {
            var ctx = 0
            for k in stride(from: order, to: 0, by: -1) { ctx = ctx * V + Int(x[t - k]) }
            joint[ctx * V + Int(x[t]), default: 0] += 1
            context[ctx, default: 0] += 1
        }
        let total = Double(n - order)
        // H = −Σ c(ctx,x)/N · ln(c(ctx,x)/c(ctx))
        var h = 0.0
        for (key, c) in joint {
            let cc = context[key / V]!
            h -= Double(c) / total * log(Double(c) / Double(cc))
        }
        return h
    }
}

// Picks the next token from a row of logits: greedy (temperature 0) or a draw from
// softmax(logits / temperature) restricted to the top-k ids and then to the smallest set whose
// probability reaches top-p (nucleus), with its own seeded generator, so a seed fixes the sample.
import Foundation

public struct SamplingOptions: Sendable {
    /// 0 = greedy (the largest logit, ties to the lower id).
    public var temperature: Double = 1
    /// Keep only the k most likely ids (0 = all).
    public var topK = 0
    /// Keep the smallest set of most likely ids whose probability reaches p (1 = all).
    public var topP = 1.0
    public var seed: UInt64 = 1234
    public init(temperature: Double = 1, topK: Int = 0, topP: Double = 1, seed: UInt64 = 1234) {
        self.temperature = temperature; self.topK = topK; self.topP = topP; self.seed = seed
    }
}

public struct Sampler {
    public let options: SamplingOptions
    private var state: UInt64

    public init(_ options: SamplingOptions) { self.options = options; state = options.seed }

    /// SplitMix64: a uniform double in [0, 1).
    private mutating func uniform() -> Double {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) / Double(1 << 53)
    }

    public mutating func next(_ logits: UnsafeBufferPointer<Float>) -> Int32 {
        if options.temperature <= 0 {
            var best = 0
            for i in 1 ..< logits.count where logits[i] > logits[best] { best = i }
            return Int32(best)
        }
        // Candidates by decreasing logit (ties to the lower id), cut to top-k.
        var order = Array(0 ..< logits.count)
        order.sort { logits[$0] != logits[$1] ? logits[$0] > logits[$1] : $0 < $1 }
        if options.topK > 0 && options.topK < order.count { order.removeLast(order.count - options.topK) }
        let m = Double(logits[order[0]]), invT = 1 / options.temperature
        var p = order.map { Foundation.exp((Double(logits[$0]) - m) * invT) }
        let total = p.reduce(0, +)
        for i in p.indices { p[i] /= total }
        if options.topP < 1 {
            var acc = 0.0, keep = p.count
            for (i, x) in p.enumerated() { acc += x; if acc >= options.topP { keep = i + 1; break } }
            p.removeLast(p.count - keep)
            let kept = p.reduce(0, +)
            for i in p.indices { p[i] /= kept }
        }
        let u = uniform()
        var acc = 0.0
        for (i, x) in p.enumerated() { acc += x; if u < acc { return Int32(order[i]) } }
        return Int32(order[p.count - 1])
    }
}

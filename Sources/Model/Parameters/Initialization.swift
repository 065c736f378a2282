// Initialisation (SPEC section 2): norms 1, depth embeddings 0, everything else
// normal(0, 0.02), `wo` and `w2` scaled by 1/sqrt(2R). Each tensor, and each
// expert's slice of an expert tensor, draws from its own stream keyed by
// (seed, path, expert index), so the initial model does not depend on the
// number of ranks.
import Foundation

/// SplitMix64: a small, well-mixed 64-bit generator (Steele, Lea, Flood 2014).
public struct SplitMix64: RandomNumberGenerator {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in (0, 1].
    public mutating func nextUnitOpen() -> Double { (Double(next() >> 11) + 1) * 0x1.0p-53 }
    /// Standard normal by Box-Muller (one value per call, for simplicity).
    public mutating func nextNormal() -> Double {
        let u1 = nextUnitOpen(), u2 = nextUnitOpen()
        return (-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2)
    }
}

/// The stream of one tensor (expert = -1) or one expert's slice.
public func parameterStream(seed: Int, path: String, expert: Int) -> SplitMix64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325          // FNV-1a over the path bytes
    for b in path.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
    var mix = SplitMix64(seed: h ^ UInt64(bitPattern: Int64(seed)) &* 0x9E37_79B9_7F4A_7C15)
    mix.state ^= UInt64(bitPattern: Int64(expert &+ 1)) &* 0xD6E8_FEB8_6659_FD93
    _ = mix.next()
    return mix
}

extension ParameterStore {
    /// Fills the parameters per SPEC section 2; moments are zeroed. The streams are independent, so with
    /// `workers` > 1 they are drawn on several threads at once, largest first, with the same values.
    public func initialize(seed: Int, depth R: Int, workers: Int = 1) {
        var streams: [InitStream] = []
        for p in infos {
            let dst = params + p.offset
            if p.kind.isNorm { dst.update(repeating: 1, count: p.count); continue }
            if p.kind == .depthEmbed { dst.update(repeating: 0, count: p.count); continue }
            let std = 0.02 * (p.kind.isResidualOutput ? 1 / (2 * Double(R)).squareRoot() : 1)
            if p.isExpert {
                for (j, e) in p.localRows.enumerated() {
                    streams.append(InitStream(dst: dst + j * p.rowSize, count: p.rowSize, path: p.path, expert: e, std: std))
                }
            } else {
                streams.append(InitStream(dst: dst, count: p.count, path: p.path, expert: -1, std: std))
            }
        }
        if workers <= 1 {
            for s in streams { s.draw(seed: seed) }
        } else {
            // concurrentPerform hands out the indices in order as threads free up: big streams first.
            streams.sort { $0.count > $1.count }
            streams.withUnsafeBufferPointer { all in
                DispatchQueue.concurrentPerform(iterations: all.count) { all[$0].draw(seed: seed) }
            }
        }
        expAvg.update(repeating: 0, count: count)
        expAvgSq.update(repeating: 0, count: count)
    }
}

/// One tensor's (or one expert slice's) normal(0, std) values, drawn from its own stream.
private struct InitStream {
    let dst: UnsafeMutablePointer<Float>
    let count: Int
    let path: String
    let expert: Int          // -1: not an expert slice
    let std: Double

    func draw(seed: Int) {
        var rng = parameterStream(seed: seed, path: path, expert: expert)
        for i in 0 ..< count { dst[i] = Float(std * rng.nextNormal()) }
    }
}

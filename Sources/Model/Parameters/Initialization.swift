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
    /// Fills the parameters per SPEC section 2; moments are zeroed. The streams are independent, so they are
    /// drawn on `workers` threads at once (largest first) with the same values as one thread would draw.
    public func initialize(seed: Int, depth R: Int, workers: Int = 1) {
        // One unit per stream: (destination, count, path, expert or -1, std).
        var units: [(dst: UnsafeMutablePointer<Float>, count: Int, path: String, expert: Int, std: Double)] = []
        for p in infos {
            let dst = params + p.offset
            let name = p.path.split(separator: "/").last.map(String.init) ?? p.path
            if name.hasSuffix("norm") { dst.update(repeating: 1, count: p.count); continue }
            if name == "depth_embed" { dst.update(repeating: 0, count: p.count); continue }
            let std = 0.02 * ((name == "wo" || name == "w2") ? 1 / (2 * Double(R)).squareRoot() : 1)
            if p.isExpert {
                for (j, e) in p.localRows.enumerated() {
                    units.append((dst + j * p.rowSize, p.rowSize, p.path, e, std))
                }
            } else {
                units.append((dst, p.count, p.path, -1, std))
            }
        }
        units.sort { $0.count > $1.count }
        let draw = { (u: (dst: UnsafeMutablePointer<Float>, count: Int, path: String, expert: Int, std: Double)) in
            var rng = parameterStream(seed: seed, path: u.path, expert: u.expert)
            for i in 0 ..< u.count { u.dst[i] = Float(u.std * rng.nextNormal()) }
        }
        if workers <= 1 {
            for u in units { draw(u) }
        } else {
            // Units are taken in order from a shared cursor: the big ones first, the small ones fill the gaps.
            let next = UnitCursor()
            units.withUnsafeBufferPointer { all in
                DispatchQueue.concurrentPerform(iterations: min(workers, all.count)) { _ in
                    while let i = next.take(below: all.count) { draw(all[i]) }
                }
            }
        }
        expAvg.update(repeating: 0, count: count)
        expAvgSq.update(repeating: 0, count: count)
    }
}

/// A shared work index for `initialize`'s threads.
private final class UnitCursor: @unchecked Sendable {
    private var value = 0
    private let lock = NSLock()
    func take(below n: Int) -> Int? {
        lock.lock(); defer { lock.unlock() }
        guard value < n else { return nil }
        value += 1
        return value - 1
    }
}

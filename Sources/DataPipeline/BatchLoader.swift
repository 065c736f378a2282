// Training batches: the token stream cut into windows of T+1 tokens, visited in a
// per-epoch random order, split so that the global batch and every global micro-batch
// are the same whatever the world size (SPEC section 1 train.*, section 3 Invariance).
//
// - Window i is tokens[i*T ..< i*T + T + 1] (inputs the first T, targets the last T);
//   there are (count − 1) / T windows per epoch (a tail shorter than a window is unused).
// - Epoch e visits every window once, in a Fisher–Yates permutation drawn from
//   SplitMix64 seeded by (seed, e).
// - An optimizer step takes the next `globalBatch` windows of that order, running on
//   into the next epoch's permutation when one ends.
// - With world size W and micro-batch b there are M = globalBatch / (b·W) micro-steps;
//   micro-step m's global micro-batch is the step's windows [m·b·W, (m+1)·b·W), and
//   rank r takes [m·b·W + r·b, m·b·W + (r+1)·b) of it. Concatenating the ranks' shares in
//   rank order gives back the global micro-batch (the order SPEC section 3 uses for
//   capacity), so runs with equal b·W see the same micro-batches for any W.

import Foundation

/// A thrown error of the loader (bad split, bad shape, mismatched state), one line.
public struct BatchLoaderError: Error, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Where a loader is in its data order; saved with a checkpoint, restored on resume.
/// It is global (the same on every rank), so a run may resume on another world size.
public struct LoaderState: Codable, Equatable, Sendable {
    /// Current epoch, from 0.
    public var epoch: Int
    /// Windows of this epoch's permutation already consumed.
    public var cursor: Int
    /// Optimizer steps taken.
    public var steps: Int
    /// Identity of the data order: a state only fits a loader with the same three.
    public var seed: UInt64
    public var seqLen: Int
    public var windowsPerEpoch: Int

    public init(epoch: Int, cursor: Int, steps: Int, seed: UInt64, seqLen: Int, windowsPerEpoch: Int) {
        self.epoch = epoch; self.cursor = cursor; self.steps = steps
        self.seed = seed; self.seqLen = seqLen; self.windowsPerEpoch = windowsPerEpoch
    }

    /// Windows consumed since the start of training.
    public var windowsSeen: Int { epoch * windowsPerEpoch + cursor }
    /// Target tokens consumed since the start of training (T per window).
    public var tokensSeen: Int { windowsSeen * seqLen }
}

public final class BatchLoader {
    public let source: TokenSource
    /// T
    public let seqLen: Int
    /// Windows per optimizer step, over all ranks.
    public let globalBatch: Int
    /// b: windows per rank per micro-step.
    public let microBatch: Int
    public let rank: Int
    public let worldSize: Int
    public let seed: UInt64
    /// (count − 1) / T
    public let windowsPerEpoch: Int
    /// M = globalBatch / (microBatch · worldSize)
    public let microSteps: Int

    private var epoch = 0
    private var cursor = 0
    private var steps = 0
    private var order: [Int] = []        // permutation of the epoch `orderEpoch`
    private var orderEpoch = -1

    public init(source: TokenSource, seqLen: Int, globalBatch: Int, microBatch: Int,
                rank: Int, worldSize: Int, seed: UInt64) throws {
        guard seqLen >= 1 else { throw BatchLoaderError("BatchLoader: seq_len must be >= 1, got \(seqLen)") }
        guard worldSize >= 1, (0 ..< worldSize).contains(rank) else {
            throw BatchLoaderError("BatchLoader: rank \(rank) is not in 0 ..< world size \(worldSize)")
        }
        guard globalBatch >= 1, microBatch >= 1, globalBatch % (microBatch * worldSize) == 0 else {
            throw BatchLoaderError("BatchLoader: train.global_batch (\(globalBatch)) must be a positive multiple of "
                + "train.micro_batch × world size (\(microBatch) × \(worldSize))")
        }
        let windows = source.count >= 1 ? (source.count - 1) / seqLen : 0
        guard windows >= 1 else {
            throw BatchLoaderError("BatchLoader: the training split has \(source.count) tokens, too short for one window "
                + "of seq_len + 1 = \(seqLen + 1) tokens; use more data or a smaller model.seq_len")
        }
        self.source = source; self.seqLen = seqLen; self.globalBatch = globalBatch; self.microBatch = microBatch
        self.rank = rank; self.worldSize = worldSize; self.seed = seed
        self.windowsPerEpoch = windows
        self.microSteps = globalBatch / (microBatch * worldSize)
    }

    // MARK: State

    /// The position in the data order. Setting it traps if the state belongs to another
    /// data order (seed, seq_len or split differ); use `restore` to get an error instead.
    public var state: LoaderState {
        get { LoaderState(epoch: epoch, cursor: cursor, steps: steps, seed: seed, seqLen: seqLen, windowsPerEpoch: windowsPerEpoch) }
        set {
            do { try restore(newValue) } catch { preconditionFailure("\(error)") }
        }
    }

    /// Continues from `s` (a checkpoint's state); throws if it belongs to another data order.
    public func restore(_ s: LoaderState) throws {
        guard s.seed == seed, s.seqLen == seqLen, s.windowsPerEpoch == windowsPerEpoch else {
            throw BatchLoaderError("BatchLoader: the saved data position is for seed \(s.seed), seq_len \(s.seqLen), "
                + "\(s.windowsPerEpoch) windows per epoch; this loader has seed \(seed), seq_len \(seqLen), "
                + "\(windowsPerEpoch) windows per epoch (same train.seed, model.seq_len and data.train needed to resume)")
        }
        guard s.epoch >= 0, (0 ..< windowsPerEpoch).contains(s.cursor), s.steps >= 0 else {
            throw BatchLoaderError("BatchLoader: invalid saved data position (epoch \(s.epoch), cursor \(s.cursor), steps \(s.steps))")
        }
        epoch = s.epoch; cursor = s.cursor; steps = s.steps
    }

    /// Target tokens consumed so far, over all ranks (T per window).
    public var tokensSeen: Int { state.tokensSeen }
    /// Target tokens per epoch: windowsPerEpoch · T.
    public var tokensPerEpoch: Int { windowsPerEpoch * seqLen }
    /// Tokens seen / training tokens (`tokensPerEpoch`), e.g. 0.14 after 14% of an epoch.
    public var epochFraction: Double { Double(state.windowsSeen) / Double(windowsPerEpoch) }

    // MARK: Order

    /// The order in which epoch `epoch` visits the windows `0 ..< windows`:
    /// Fisher–Yates driven by SplitMix64 seeded from (seed, epoch).
    public static func permutation(windows: Int, seed: UInt64, epoch: Int) -> [Int] {
        var p = Array(0 ..< windows)
        var rng = SplitMix64Stream(seed: mix64(mix64(seed ^ 0x6261_7463_6800_0000) &+ UInt64(epoch)))   // "batch"
        for i in stride(from: windows - 1, to: 0, by: -1) { p.swapAt(i, rng.nextInt(upTo: i + 1)) }
        return p
    }

    /// The next optimizer step's `globalBatch` window indices (all ranks, in order);
    /// advances the state.
    public func nextStepWindows() -> [Int] {
        var out: [Int] = []
        out.reserveCapacity(globalBatch)
        while out.count < globalBatch {
            if orderEpoch != epoch {
                order = BatchLoader.permutation(windows: windowsPerEpoch, seed: seed, epoch: epoch)
                orderEpoch = epoch
            }
            let take = min(globalBatch - out.count, windowsPerEpoch - cursor)
            out.append(contentsOf: order[cursor ..< cursor + take])
            cursor += take
            if cursor == windowsPerEpoch { epoch += 1; cursor = 0 }
        }
        steps += 1
        return out
    }

    /// This rank's windows of a step: M arrays of b indices, micro-step m holding
    /// `stepWindows[m·b·W + r·b ..< m·b·W + (r+1)·b]`.
    public func rankShare(of stepWindows: [Int]) -> [[Int]] {
        precondition(stepWindows.count == globalBatch, "rankShare: expected \(globalBatch) windows, got \(stepWindows.count)")
        let b = microBatch, W = worldSize
        return (0 ..< microSteps).map { m in Array(stepWindows[(m * b * W + rank * b) ..< (m * b * W + (rank + 1) * b)]) }
    }

    /// Copies window `w` (T + 1 tokens) to `out`.
    public func copyWindow(_ w: Int, into out: UnsafeMutablePointer<Int32>) {
        precondition((0 ..< windowsPerEpoch).contains(w), "copyWindow: window \(w) outside 0 ..< \(windowsPerEpoch)")
        source.copyTokens(w * seqLen ..< w * seqLen + seqLen + 1, into: out)
    }

    /// The next step for this rank: M arrays (one per micro-step), each b windows of T + 1
    /// tokens, row-major (`[b, T+1]`: inputs `row[0..<T]`, targets `row[1...T]`).
    public func nextStep() -> [[Int32]] {
        let share = rankShare(of: nextStepWindows())
        let row = seqLen + 1
        return share.map { windows in
            var buf = [Int32](repeating: 0, count: windows.count * row)
            buf.withUnsafeMutableBufferPointer { p in
                for (i, w) in windows.enumerated() { copyWindow(w, into: p.baseAddress! + i * row) }
            }
            return buf
        }
    }

    /// `nextStep` into one buffer of `[M, b, T+1]` tokens (micro-step m at offset m·b·(T+1)).
    public func nextStep(into out: UnsafeMutablePointer<Int32>) {
        let row = seqLen + 1
        for (m, windows) in rankShare(of: nextStepWindows()).enumerated() {
            for (i, w) in windows.enumerated() { copyWindow(w, into: out + (m * microBatch + i) * row) }
        }
    }
}

// MARK: - Random numbers

/// SplitMix64 (Steele, Lea, Flood 2014): a 64-bit counter through a mixing function.
/// Deterministic on every platform, cheap to seed per (seed, epoch) or per context.
struct SplitMix64Stream {
    private var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return mix64(state)
    }

    /// Uniform in `0 ..< n` (multiply-high; bias below 2^-40 for n < 2^24).
    mutating func nextInt(upTo n: Int) -> Int {
        Int(next().multipliedFullWidth(by: UInt64(n)).high)
    }

    /// Uniform in [0, 1) with 53 random bits.
    mutating func nextUnitDouble() -> Double {
        Double(next() >> 11) * 0x1p-53
    }
}

/// The SplitMix64 output function: a bijective 64-bit mixer.
func mix64(_ x: UInt64) -> UInt64 {
    var z = x
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}

// BatchLoader: exact epoch coverage, seeded order, world-size invariance of the global
// batch and micro-batches, and exact continuation from a saved state.
@testable import DataPipeline
import Foundation
import TestSupport
import XCTest

final class LoaderTests: XCTestCase {
    /// Token i has id i % vocab, so a window's first token tells where it starts.
    func ramp(_ n: Int, vocab: Int = 1 << 20) -> InMemoryTokens {
        InMemoryTokens((0 ..< n).map { Int32($0 % vocab) }, vocabSize: vocab)
    }

    func loader(_ src: TokenSource, T: Int = 4, global: Int = 8, micro: Int = 2, rank: Int = 0, world: Int = 1,
                seed: UInt64 = 1) throws -> BatchLoader {
        try BatchLoader(source: src, seqLen: T, globalBatch: global, microBatch: micro, rank: rank, worldSize: world, seed: seed)
    }

    func testWindowsAreContiguousAndOverlapByOne() throws {
        let l = try loader(ramp(42), T: 4, global: 2, micro: 1)
        XCTAssertEqual(l.windowsPerEpoch, (42 - 1) / 4)          // 10
        XCTAssertEqual(l.microSteps, 2)
        var w = [Int32](repeating: 0, count: 5)
        w.withUnsafeMutableBufferPointer { l.copyWindow(3, into: $0.baseAddress!) }
        XCTAssertEqual(w, [12, 13, 14, 15, 16], "window i = tokens[i*T ..< i*T+T+1]")
        let exact = try loader(ramp(41), T: 4, global: 2, micro: 1)
        XCTAssertEqual(exact.windowsPerEpoch, 10, "41 tokens: the last window ends at token 40")
    }

    func testEveryWindowOncePerEpoch() throws {
        // 37 windows, 8 per step: steps straddle epoch boundaries.
        let l = try loader(ramp(37 * 5 + 1), T: 5, global: 8, micro: 2, world: 2)
        XCTAssertEqual(l.windowsPerEpoch, 37)
        var seen: [Int] = []
        for _ in 0 ..< 37 { seen += l.nextStepWindows() }   // 296 windows = 8 epochs exactly
        XCTAssertEqual(l.state.epoch, 8); XCTAssertEqual(l.state.cursor, 0); XCTAssertEqual(l.state.steps, 37)
        for e in 0 ..< 8 {
            let epoch = Array(seen[e * 37 ..< (e + 1) * 37])
            XCTAssertEqual(epoch.sorted(), Array(0 ..< 37), "epoch \(e) covers every window once")
            XCTAssertEqual(epoch, BatchLoader.permutation(windows: 37, seed: 1, epoch: e))
        }
        XCTAssertNotEqual(Array(seen[0 ..< 37]), Array(seen[37 ..< 74]), "each epoch has its own order")
        assertClose(l.epochFraction, 8.0, rtol: 0, atol: 1e-12)
        XCTAssertEqual(l.tokensSeen, 37 * 8 * 5)
        XCTAssertEqual(l.tokensPerEpoch, 37 * 5)
    }

    func testSeedDecidesTheOrder() throws {
        let src = ramp(1001)
        let a = try loader(src, T: 10, seed: 42), b = try loader(src, T: 10, seed: 42), c = try loader(src, T: 10, seed: 43)
        for _ in 0 ..< 30 {
            let wa = a.nextStepWindows()
            XCTAssertEqual(wa, b.nextStepWindows())
            _ = c.nextStepWindows()
        }
        XCTAssertNotEqual(BatchLoader.permutation(windows: 100, seed: 42, epoch: 0),
                          BatchLoader.permutation(windows: 100, seed: 43, epoch: 0))
        XCTAssertNotEqual(BatchLoader.permutation(windows: 100, seed: 42, epoch: 0), Array(0 ..< 100), "shuffled")
    }

    /// SPEC Invariance: the ranks' shares, concatenated in rank order, are the global
    /// micro-batches, and together the global batch, whatever the world size.
    func testWorldSizeInvariance() throws {
        let src = ramp(97 * 8 + 1), T = 8, global = 16
        // Equal global micro-batch (b·W = 4): identical micro-batches for W = 1, 2, 4.
        var microBatchesByWorld: [[[Int32]]] = []
        for W in [1, 2, 4] {
            let ranks = try (0 ..< W).map { try loader(src, T: T, global: global, micro: 4 / W, rank: $0, world: W, seed: 9) }
            var micro: [[Int32]] = []
            for _ in 0 ..< 13 {
                let perRank = ranks.map { $0.nextStep() }                  // [rank][m] -> tokens
                XCTAssertTrue(perRank.allSatisfy { $0.count == global / 4 })
                for m in 0 ..< global / 4 { micro.append(perRank.flatMap { $0[m] }) }
            }
            microBatchesByWorld.append(micro)
        }
        XCTAssertEqual(microBatchesByWorld[0], microBatchesByWorld[1], "W = 2 vs W = 1")
        XCTAssertEqual(microBatchesByWorld[0], microBatchesByWorld[2], "W = 4 vs W = 1")

        // Fixed b = 2: micro-batches differ in size, the global batch does not.
        var globalByWorld: [[Int32]] = []
        for W in [1, 2, 4] {
            let ranks = try (0 ..< W).map { try loader(src, T: T, global: global, micro: 2, rank: $0, world: W, seed: 9) }
            var all: [Int32] = []
            for _ in 0 ..< 13 {
                let perRank = ranks.map { $0.nextStep() }
                for m in 0 ..< global / (2 * W) { all += perRank.flatMap { $0[m] } }
            }
            globalByWorld.append(all)
        }
        XCTAssertEqual(globalByWorld[0], globalByWorld[1])
        XCTAssertEqual(globalByWorld[0], globalByWorld[2])
        XCTAssertEqual(globalByWorld[0], microBatchesByWorld[0].flatMap { $0 })
    }

    func testRankShareLayout() throws {
        let l = try loader(ramp(1000), T: 4, global: 12, micro: 2, rank: 1, world: 3)
        XCTAssertEqual(l.microSteps, 2)
        let step = Array(100 ..< 112)
        XCTAssertEqual(l.rankShare(of: step), [[102, 103], [108, 109]])
    }

    func testFillVariantMatches() throws {
        let a = try loader(ramp(500), T: 6, global: 8, micro: 2, rank: 1, world: 2, seed: 5)
        let b = try loader(ramp(500), T: 6, global: 8, micro: 2, rank: 1, world: 2, seed: 5)
        for _ in 0 ..< 20 {
            var buf = [Int32](repeating: -1, count: 2 * 2 * 7)
            buf.withUnsafeMutableBufferPointer { a.nextStep(into: $0.baseAddress!) }
            XCTAssertEqual(buf, b.nextStep().flatMap { $0 })
        }
    }

    func testStateRestoreContinuesIdentically() throws {
        let src = ramp(23 * 4 + 3)
        let a = try loader(src, T: 4, global: 6, micro: 3, seed: 77)
        for _ in 0 ..< 9 { _ = a.nextStep() }                 // mid-epoch (54 windows, 23 per epoch)
        let saved = a.state
        XCTAssertEqual(saved.epoch, 2); XCTAssertEqual(saved.cursor, 8); XCTAssertEqual(saved.steps, 9)
        assertClose(a.epochFraction, 54.0 / 23.0, rtol: 0, atol: 1e-12)

        // Through JSON, as a checkpoint would store it, into a fresh loader on another world size.
        let data = try JSONEncoder().encode(saved)
        let restored = try JSONDecoder().decode(LoaderState.self, from: data)
        XCTAssertEqual(restored, saved)
        let b0 = try loader(src, T: 4, global: 6, micro: 3, rank: 0, world: 2, seed: 77)
        let b1 = try loader(src, T: 4, global: 6, micro: 3, rank: 1, world: 2, seed: 77)
        b0.state = restored; try b1.restore(restored)
        for _ in 0 ..< 40 {
            let expect = a.nextStep()                           // world 1: M = 2, b = 3
            XCTAssertEqual(expect.flatMap { $0 }, b0.nextStep()[0] + b1.nextStep()[0])
        }
        XCTAssertEqual(a.state, b0.state)
        XCTAssertEqual(b0.state, b1.state)

        // A large seed survives JSON too.
        var big = saved; big.seed = UInt64.max - 1
        XCTAssertEqual(try JSONDecoder().decode(LoaderState.self, from: JSONEncoder().encode(big)), big)
    }

    func testErrors() throws {
        func message(_ body: () throws -> Void) -> String {
            do { try body(); return "" } catch { return "\(error)" }
        }
        XCTAssertTrue(message { _ = try self.loader(self.ramp(4), T: 4) }.contains("too short for one window of seq_len + 1 = 5 tokens"))
        XCTAssertTrue(message { _ = try self.loader(self.ramp(0), T: 4) }.contains("has 0 tokens"))
        XCTAssertNoThrow(try loader(ramp(5), T: 4), "5 tokens make one window")
        XCTAssertTrue(message { _ = try self.loader(self.ramp(100), global: 6, micro: 4) }.contains("multiple of"))
        XCTAssertTrue(message { _ = try self.loader(self.ramp(100), rank: 2, world: 2) }.contains("rank 2"))
        XCTAssertTrue(message { _ = try self.loader(self.ramp(100), T: 0) }.contains("seq_len must be >= 1"))
        let l = try loader(ramp(100), T: 4, seed: 1)
        var other = l.state; other.seed = 2
        XCTAssertTrue(message { try l.restore(other) }.contains("seed 2"))
        var bad = l.state; bad.cursor = l.windowsPerEpoch
        XCTAssertTrue(message { try l.restore(bad) }.contains("invalid saved data position"))
    }

    /// A one-window split still yields full steps, epoch after epoch.
    func testTinySplitWrapsAround() throws {
        let l = try loader(ramp(5), T: 4, global: 4, micro: 2)
        let s = l.nextStep()
        XCTAssertEqual(s, [[0, 1, 2, 3, 4, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]])
        XCTAssertEqual(l.state.epoch, 4)
    }
}

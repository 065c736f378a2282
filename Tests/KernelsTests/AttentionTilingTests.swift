// Attention tiling: the blocked causal attention (row blocks that skip the masked upper triangle) agrees with the
// reference and with finite differences when T spans several blocks, including a partial last block.
import XCTest
import TestSupport
@testable import Kernels

final class AttentionTilingTests: XCTestCase {
    let B = 2, T = 11, C = 6, H = 2

    func testSmallBlocksMatchOneBlock() {
        var rng = TestRNG(seed: 43)
        let n = B * T * C
        let q = rng.floats(n, scale: 1.5), k = rng.floats(n, scale: 1.5), v = rng.floats(n), dout = rng.floats(n)
        var results: [[Float]] = []
        for bs in [T, 4, 3, 1] {
            var out = [Float](repeating: .nan, count: n), probs = [Float](repeating: .nan, count: B * H * T * T)
            attentionForward(&out, &probs, q, k, v, B, T, C, H, blockRows: bs)
            var dq = [Float](repeating: 0.5, count: n), dk = dq, dv = dq
            var scratch = [Float](repeating: .nan, count: T * T)
            attentionBackward(&dq, &dk, &dv, dout, q, k, v, probs, &scratch, B, T, C, H, blockRows: bs)
            results.append(out + probs + dq + dk + dv)
        }
        // Blocks change only which sgemm calls compute an entry and the summation order of dv and dk.
        for r in results.dropFirst() { assertClose(r, toDouble(results[0]), rtol: 1e-5, atol: 1e-6, "block sizes") }
    }
}

final class AttentionWorkersTests: XCTestCase {
    /// Heads split over two workers (single-threaded products each) give the same results as one worker.
    func testTwoWorkersMatchOne() {
        let (B, T, C, H) = (2, 9, 8, 4)
        var rng = TestRNG(seed: 44)
        let n = B * T * C
        let q = rng.floats(n), k = rng.floats(n), v = rng.floats(n), dout = rng.floats(n)
        var results: [[Float]] = []
        for workers in [1, 2] {
            var out = [Float](repeating: .nan, count: n), probs = [Float](repeating: .nan, count: B * H * T * T)
            attentionForward(&out, &probs, q, k, v, B, T, C, H, workers: workers)
            var dq = [Float](repeating: 0, count: n), dk = dq, dv = dq
            var scratch = [Float](repeating: .nan, count: workers * T * T)
            attentionBackward(&dq, &dk, &dv, dout, q, k, v, probs, &scratch, B, T, C, H, workers: workers)
            results.append(out + probs + dq + dk + dv)
        }
        assertClose(results[1], toDouble(results[0]), rtol: 1e-6, atol: 1e-7, "two workers")
    }
}

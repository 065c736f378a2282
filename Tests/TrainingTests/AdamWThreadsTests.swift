// AdamW split over threads: the same parameters and moments, bit for bit, as one thread (the update is
// element-wise; the single-thread path itself is checked against PyTorch in PyTorchFixtureTests).
import XCTest
import Configuration
import Model
@testable import Training

final class AdamWThreadsTests: XCTestCase {
    func testThreadedUpdateEqualsOneThreadBitForBit() {
        // Odd sizes, so that shares end inside tensors and inside 8-lane blocks; a decayed matrix and a norm.
        let tensors = [ModelTensor(.embed, [301, 517]), ModelTensor(.attnNorm, 0, [517]),
                       ModelTensor(.w1, 0, [3, 257, 129], isExpert: true)]
        func run(workers: Int) -> [UInt32] {
            let s = ParameterStore(tensors: tensors, localExperts: 0 ..< 3)
            s.initialize(seed: 7, depth: 2)
            var rng = SplitMix64(seed: 11)
            var config = TrainConfig()
            config.weightDecay = 0.1
            let adamw = AdamW(config)
            for t in 1 ... 3 {
                for i in 0 ..< s.count { s.grads[i] = Float(rng.nextNormal()) * 0.01 }
                adamw.update(s, lr: 1e-3, t: t, gradScale: 0.7, workers: workers)
            }
            return (0 ..< s.count).flatMap { [s.params[$0].bitPattern, s.expAvg[$0].bitPattern, s.expAvgSq[$0].bitPattern] }
        }
        let one = run(workers: 1)
        XCTAssertGreaterThan(one.count / 3, 2 * 65536, "large enough to be split")
        for w in [2, 3] { XCTAssertEqual(run(workers: w), one, "\(w) workers") }
    }
}

// Analytic estimates (MemoryEstimate, ClusterEstimate) against ModelCost, the ParameterStore that the
// model really allocates, and a hand computation of the communication bytes for a small configuration.
import XCTest
import Configuration
import Model

final class EstimateTests: XCTestCase {
    /// d 16, T 8, R 2, E 4, k 2, F 12, V 23 (tinyConfig), micro-batch 2, global batch 8.
    private func small() -> RunConfig {
        tinyConfig { c in c.train.globalBatch = 8; c.train.microBatch = 2; c.moe.zLossCoef = 0 }
    }

    func testParameterCountsMatchModelCostAndTheStore() {
        let c = small()
        let cost = ModelCost(c)
        for G in [1, 2, 4] {
            let est = ClusterEstimate(c, worldSize: 4, expertParallel: G)
            XCTAssertEqual(est.totalParameters, cost.totalParameters)
            XCTAssertEqual(est.trunkParameters, cost.totalParameters - cost.expertParameters)
            XCTAssertEqual(est.flopsPerToken, cost.flopsPerToken)
            // The store of the rank with the largest slice (group rank 0 holds ceil(E/G) experts).
            let store = ParameterStore(tensors: ModelTensors.list(c), localExperts: 0 ..< (4 + G - 1) / G)
            XCTAssertEqual(est.parametersPerRank, store.count, "G = \(G)")
        }
        XCTAssertEqual(ClusterEstimate(c, worldSize: 1, expertParallel: 1).parametersPerRank, cost.totalParameters)
    }

    func testExpertParametersPerRankShrinkWithTheExpertGroup() {
        let c = small()
        let perRank = [1, 2, 4].map { ClusterEstimate(c, worldSize: 4, expertParallel: $0).expertParametersPerRank }
        XCTAssertEqual(perRank, [4 * 384, 2 * 384, 384])      // one expert: w1 + w2 = 2·16·12 = 384
        let mem = [1, 2, 4].map { MemoryEstimate(c, expertParallel: $0, microBatch: 2).optimizerBytes }
        XCTAssertTrue(mem[0] > mem[1] && mem[1] > mem[2], "\(mem)")
    }

    func testCommunicationBytesByHand() {
        let est = ClusterEstimate(small(), worldSize: 4, expertParallel: 2)
        XCTAssertEqual(est.microSteps, 1)                      // 8 / (2 · 4)
        XCTAssertEqual(est.tokensPerRankPerStep, 16)           // N = 2 · 8
        // 4 exchanges · M 1 · R 2 · N 16 · k 2 · d 16 · 4 bytes · (G−1)/G = 1/2
        XCTAssertEqual(est.allToAllBytesPerRank, 4 * 1 * 2 * 16 * 2 * 16 * 4 / 2)
        // trunk: embed 23·16 + depth_embed 2·16 + attn_norm 16 + wq..wo 4·256 + ffn_norm 16 + router 16·4 + final_norm 16
        let trunk = 368 + 32 + 16 + 1024 + 16 + 64 + 16
        XCTAssertEqual(est.trunkParameters, trunk)
        XCTAssertEqual(est.allReduceTrunkBytes, 4 * trunk)
        XCTAssertEqual(est.allReduceExpertBytes, 4 * 2 * 384)  // two experts per rank, 2 replicas
        XCTAssertEqual(est.allReduceStatsBytes, 8 * (4 + 2 + 2 * 4) * 1 * 2)
        let ring = 2.0 * Double(4 * trunk) * 3 / 4 + 2.0 * Double(4 * 2 * 384) * 1 / 2 + 2.0 * Double(8 * 14 * 2) * 3 / 4
        XCTAssertEqual(est.allReduceRingBytesPerRank, ring, accuracy: 1e-9)
        // One rank: nothing leaves it.
        let one = ClusterEstimate(small(), worldSize: 1, expertParallel: 1)
        XCTAssertEqual(one.allToAllBytesPerRank, 0)
        XCTAssertEqual(one.allReduceRingBytesPerRank, 0)
    }

    func testMemoryEstimateByHand() {
        let c = small()
        let m = MemoryEstimate(c, expertParallel: 1, microBatch: 2)
        let P = ModelCost(c).totalParameters
        XCTAssertEqual(m.parameterBytes, 4 * P)
        XCTAssertEqual(m.gradientBytes, 4 * P)
        XCTAssertEqual(m.optimizerBytes, 8 * P)
        // N = 16, d 16, B 2, H 2, T 8, E 4, k 2, X = N·k = 32, F 12, gelu (2 hidden tensors), V 23
        let perIteration = 8 * 16 * 16 + 2 * 16 + 2 * 2 * 64 + 2 * 16 * 4 + 16 + 4 * 16 * 2 + 16 * 2 * 16 + 32 * 16 + 32 * 12 * 2
        XCTAssertEqual(m.activationBytes, 4 * (2 * perIteration + 2 * 16 * 16 + 16 + 16 * 23 + 16))
        XCTAssertEqual(m.scratchBytes, 4 * (6 * 16 * 16 + 64 + 16 * 2 * 16 + 3 * 32 * 16 + 32 * 12 * 2 + 16 * 2 + 16 * 4))
    }

    func testDefaultExpertGroupDividesTheWorldAndFitsTheExperts() {
        var c = small()
        c.moe.numExperts = 40
        for W in [8, 16, 32, 64, 1024] {
            let G = ClusterEstimate.defaultExpertParallel(c, worldSize: W)
            XCTAssertEqual(W % G, 0)
            XCTAssertLessThanOrEqual(G, 40)
        }
        XCTAssertEqual(ClusterEstimate.defaultExpertParallel(c, worldSize: 1024), 32)
    }
}

// Analytic estimates (MemoryEstimate, ClusterEstimate) against ModelCost, the ParameterStore that the
// model really allocates, and a hand computation of the communication bytes for a small configuration.
import XCTest
import Configuration
@testable import Model
import Kernels

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
        let mem = [1, 2, 4].map { MemoryEstimate(c, expertParallel: $0, microBatch: 2, packedExpertWeights: nil).optimizerBytes }
        XCTAssertTrue(mem[0] > mem[1] && mem[1] > mem[2], "\(mem)")
    }

    /// The link projection by hand: W 4, G 2, M 1, R 2 (small()), links of 8 Gbit/s = 1e9 bytes/s, 0.1 ms.
    func testLinkProjectionByHand() {
        let c = small()
        let est = ClusterEstimate(c, worldSize: 4, expertParallel: 2)
        // One rank per node: every group peer is on another node; rings over 4 nodes.
        let spread = LinkProjection(est, config: c, linkGbps: 8, latencyMs: 0.1, ranksPerNode: 1)
        XCTAssertEqual(spread.nodes, 4)
        XCTAssertEqual(spread.allToAllLinkBytesPerNode, est.allToAllBytesPerRank)
        XCTAssertEqual(spread.allToAllLinkRounds, 5 * 1 * 2)
        XCTAssertEqual(spread.allToAllSeconds, est.allToAllBytesPerRank / 1e9 + 10 * 2 * 1e-4, accuracy: 1e-12)
        let trunk = Double(est.allReduceTrunkBytes), stats = Double(est.allReduceStatsBytes)
        let experts = Double(est.allReduceExpertBytes)       // over W/G = 2 replicas, min(G, P) = 1 ring per node
        let bytes = 2 * trunk * 3 / 4 + 2 * stats * 3 / 4 + 2 * experts / 2
        XCTAssertEqual(spread.allReduceLinkBytesPerNode, bytes, accuracy: 1e-6)
        XCTAssertEqual(spread.allReduceLinkRounds, 2 * 3 * (1 * 2 + 2) + 2 * 1)
        XCTAssertEqual(spread.allReduceSeconds, LinkProjection.allReduceMeasuredFactor * bytes / 1e9 + 26 * 2 * 1e-4,
                       accuracy: 1e-12)
        XCTAssertEqual(spread.communicationSeconds, spread.allToAllSeconds + spread.allReduceSeconds)
        // Two ranks per node: each expert group inside a node, so no all-to-all crosses a link; the expert
        // replicas (ranks r and r + 2) sit on different nodes, 2 rings per node.
        let packed = LinkProjection(est, config: c, linkGbps: 8, latencyMs: 0.1, ranksPerNode: 2)
        XCTAssertEqual(packed.nodes, 2)
        XCTAssertEqual(packed.allToAllSeconds, 0)
        XCTAssertEqual(packed.allReduceLinkBytesPerNode, 2 * trunk * 3 / 4 + 2 * stats * 3 / 4 + 2 * (2 * experts / 2),
                       accuracy: 1e-6)
        // One node: nothing crosses a link.
        let one = LinkProjection(est, config: c, linkGbps: 8, latencyMs: 0.1, ranksPerNode: 4)
        XCTAssertEqual([one.allToAllSeconds, one.allReduceSeconds], [0, 0])
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
        XCTAssertEqual(est.allReduceStatsBytes, 8 * (4 + 4 + 2 * 4) * 1 * 2)   // [ΣP E, lse², N, slot counts k·E, seq aux, agreement]
        let ring = 2.0 * Double(4 * trunk) * 3 / 4 + 2.0 * Double(4 * 2 * 384) * 1 / 2 + 2.0 * Double(8 * 16 * 2) * 3 / 4
        XCTAssertEqual(est.allReduceRingBytesPerRank, ring, accuracy: 1e-9)
        // One rank: nothing leaves it.
        let one = ClusterEstimate(small(), worldSize: 1, expertParallel: 1)
        XCTAssertEqual(one.allToAllBytesPerRank, 0)
        XCTAssertEqual(one.allReduceRingBytesPerRank, 0)
    }

    func testMemoryEstimateByHand() {
        let c = small()
        let m = MemoryEstimate(c, expertParallel: 1, microBatch: 2, packedExpertWeights: nil)
        let P = ModelCost(c).totalParameters
        XCTAssertEqual(m.parameterBytes, 4 * P)
        XCTAssertEqual(m.gradientBytes, 4 * P)
        XCTAssertEqual(m.optimizerBytes, 8 * P)
        // N = 16, d 16, B 2, H 2, T 8, E 4, k 2, X = N·k = 32, F 12, gelu (2 hidden tensors), V 23, R 2.
        // Per iteration: 8·N·d + 2·N + B·H·T² | router 3·N·E (logits, scores, probs) + N + 3·N·k + E
        //               | rows N·k (row -> assignment) + N·k (assignment -> row) + N·k (assignment -> expert)
        //                 + N·k·d | X·d + X·F·2
        let perIteration = 8 * 16 * 16 + 2 * 16 + 2 * 2 * 64 + (3 * 16 * 4 + 16 + 3 * 16 * 2 + 4) + (32 + 32 + 32 + 32 * 16)
            + 32 * 16 + 32 * 12 * 2
        XCTAssertEqual(m.activationBytes, 4 * (2 * perIteration + 2 * 16 * 16 + 16 + 16 * 23 + 2 * 16))
        // Scratch: 4·N·d + attention 5·N·d + T² | MoE 2·X·d + N·k + dlogits N·E + expert grads X·F·1 (gelu:
        //          d(act) becomes d(h1) in place) + 8-byte counts: W·k·E + 3·k·E (router) + 2·G·E (dispatcher:
        //          every rank's counts out and in) | no loan buffers (one rank)
        XCTAssertEqual(m.scratchBytes, 4 * (9 * 16 * 16 + 64 + 2 * 32 * 16 + 32 + 16 * 4 + 32 * 12 * 1)
                                       + 8 * (8 + 3 * 8 + 2 * 1 * 4))
        // Packed expert weights (AVX-512): every expert (one rank), 2 matrices each of the larger packing of
        // [16,12] (12 columns padded to 64: 16·64) and [12,16] (12·64), and 16 floats of alignment.
        let packed = MemoryEstimate(c, expertParallel: 1, microBatch: 2, packedExpertWeights: .avx512)
        XCTAssertEqual(packed.scratchBytes - m.scratchBytes, 4 * (4 * 2 * 16 * 64 + 16))
        // AVX2 packs in 16-column panels: [16,12] takes 16·16, [12,16] 12·16.
        let avx2 = MemoryEstimate(c, expertParallel: 1, microBatch: 2, packedExpertWeights: .avx2)
        XCTAssertEqual(avx2.scratchBytes - m.scratchBytes, 4 * (4 * 2 * 16 * 16 + 16))
        // Two ranks per expert group: its 2 experts and room for 4 loans.
        let g2 = MemoryEstimate(c, expertParallel: 2, microBatch: 2, packedExpertWeights: .avx512).scratchBytes
            - MemoryEstimate(c, expertParallel: 2, microBatch: 2, packedExpertWeights: nil).scratchBytes
        XCTAssertEqual(g2, 4 * (6 * 2 * 16 * 64 + 16))
        // Per-iteration experts keep the BLAS products: no packs.
        var indexed = c
        indexed.moe.experts = .indexed
        XCTAssertEqual(MemoryEstimate(indexed, expertParallel: 1, microBatch: 2, packedExpertWeights: .avx512).scratchBytes,
                       MemoryEstimate(indexed, expertParallel: 1, microBatch: 2, packedExpertWeights: nil).scratchBytes)
    }

    /// The estimate is the model's own buffer tables: a model built and run for one step allocates exactly
    /// that (up to one-element placeholders of buffers a configuration never uses: < 1 KiB).
    func testMemoryEstimateEqualsWhatTheModelAllocates() {
        let threads = Blas.configuredThreads
        Blas.numThreads = 1                       // one worker: the attention scratch of the estimate's default
        defer { Blas.numThreads = threads }
        let configs: [(String, (inout RunConfig) -> Void)] = [
            ("moe gelu", { _ in }), ("moe swiglu indexed", { $0.moe.activation = .swiglu; $0.model.trunk = .indexed }),
            ("dense", { $0.moe.numExperts = 0 }), ("untied top-1", { $0.model.tieEmbeddings = false; $0.moe.topK = 1 }),
        ]
        for (name, edit) in configs {
            var c = small()
            edit(&c)
            let ctx = ParallelContext.single(numExperts: c.moe.numExperts)
            let model = RecurrentMoEModel(config: c, ctx: ctx)
            let B = 2, T = c.model.seqLen
            var rng = SplitMix64(seed: 4)
            let x = (0 ..< B * T + 1).map { _ in Int32(rng.next() % UInt64(c.model.vocabSize)) }
            _ = Array(x.prefix(B * T)).withUnsafeBufferPointer { xp in
                Array(x.dropFirst()).withUnsafeBufferPointer { yp in
                    model.step(inputs: xp.baseAddress!, targets: yp.baseAddress!, B: B, T: T,
                               scales: LossScales(ce: 1, aux: 0.01, z: 0), applyCapacity: true, backward: true)
                }
            }
            let m = MemoryEstimate(c, expertParallel: 1, microBatch: B, packedExpertWeights: ctx.expertKernel)
            let allocated = bufferBytes(model), estimated = m.activationBytes + m.scratchBytes
            XCTAssertGreaterThanOrEqual(allocated, estimated, name)
            XCTAssertLessThan(allocated - estimated, 1024, "\(name): allocated \(allocated) bytes, estimated \(estimated)")
        }
    }

    /// Bytes held by every Buffer reachable from `root` (each counted once).
    private func bufferBytes(_ root: Any) -> Int {
        var seen = Set<ObjectIdentifier>()
        func walk(_ x: Any) -> Int {
            if let b = x as? AllocatedBuffer { return seen.insert(ObjectIdentifier(b)).inserted ? b.allocatedBytes : 0 }
            if x is [Float] || x is [Double] || x is [Int] || x is [Int32] || x is [Int64] || x is String { return 0 }
            let m = Mirror(reflecting: x)
            if m.displayStyle == .class, !seen.insert(ObjectIdentifier(x as AnyObject)).inserted { return 0 }
            return m.children.reduce(0) { $0 + walk($1.value) }
        }
        return walk(root)
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

extension EstimateTests {
    /// The FLOP count summed from the tensor table equals the closed form R·(4d² + d·E + k·m·d·F) + d·V
    /// (dense: R·(4d² + m·d·F) + d·V) over sharing, activation, head and top-k variants.
    func testMatmulParametersPerTokenMatchTheClosedForm() {
        let edits: [(inout RunConfig) -> Void] = [
            { _ in }, { $0.model.trunk = .indexed }, { $0.moe.experts = .indexed; $0.moe.activation = .swiglu },
            { $0.moe.numExperts = 0 }, { $0.model.tieEmbeddings = false; $0.moe.topK = 1 },
        ]
        for edit in edits {
            let c = tinyConfig(edit), m = c.model, f = c.moe
            let mats = f.activation == .swiglu ? 3 : 2
            let ffn = f.isDense ? mats * m.dModel * f.dFF : m.dModel * f.numExperts + f.topK * mats * m.dModel * f.dFF
            let closed = m.depth * (4 * m.dModel * m.dModel + ffn) + m.dModel * m.vocabSize
            XCTAssertEqual(ModelCost.matmulParametersPerToken(c), closed)
        }
    }
}

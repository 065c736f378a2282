// Projection of a configuration to W ranks with expert groups of G ranks (parallel.expert_parallel),
// from the configuration alone. Weak scaling: every rank keeps train.micro_batch sequences per
// micro-step; the global batch is train.global_batch when W·micro_batch divides it, else
// W·micro_batch (one micro-step). Formulas (bytes are float32 payloads unless noted):
//
//   tokens per rank per micro-step   N = micro_batch·T;  micro-steps M = global_batch / (micro_batch·W)
//   parameters per rank              trunk + ceil(E/G)·(params of one expert, all pools)
//   optimizer state per rank         2 moments + gradients = 12 bytes per parameter (parameters 4)
//   activations per rank             MemoryEstimate (saved forward state of one micro-batch + scratch)
//   FLOPs per token                  ModelCost.flopsPerToken (6·matmul params used per token + 6·R·T·d)
//   all-to-all per rank per step     4 exchanges per MoE use (dispatch, combine, and their mirrors in
//                                    backward) × R uses × M micro-steps, each sending the rank's N·k rows of
//                                    d floats, of which a fraction (G−1)/G leaves the rank (balanced routing):
//                                    A2A = 16·M·R·N·k·d·(G−1)/G bytes sent (and as many received)
//   all-reduce per step              trunk gradients over the world: 4·P_trunk bytes;
//                                    expert gradients over the W/G replicas: 4·P_expert,rank bytes;
//                                    routing statistics: 8·(E + 2 + k·E) bytes per use, M·R uses;
//                                    a ring all-reduce of S bytes over n ranks sends 2·S·(n−1)/n per rank.
import Configuration
import Kernels

public struct ClusterEstimate: Sendable, Codable {
    public var worldSize: Int
    public var expertParallel: Int
    /// Replicas of each expert: W / G.
    public var expertReplicas: Int
    public var globalBatch: Int
    public var microBatch: Int
    public var microSteps: Int
    public var tokensPerRankPerStep: Int
    public var totalParameters: Int
    public var trunkParameters: Int
    /// Expert parameters on the rank holding the most experts (ceil(E/G) per pool).
    public var expertParametersPerRank: Int
    public var parametersPerRank: Int
    public var memory: MemoryEstimate
    public var flopsPerToken: Double
    public var flopsPerRankPerStep: Double
    /// Payload one rank sends by all-to-all in a step (received is the same on average).
    public var allToAllBytesPerRank: Double
    /// Buffers all-reduced per step (trunk gradients, expert gradients over replicas, routing statistics).
    public var allReduceTrunkBytes: Int
    public var allReduceExpertBytes: Int
    public var allReduceStatsBytes: Int
    /// Bytes one rank sends for those all-reduces with a ring algorithm: 2·S·(n−1)/n per buffer.
    public var allReduceRingBytesPerRank: Double
    /// Communication time per step over a given link between nodes (estimate --link-gbps), when asked for.
    public var link: LinkProjection?

    /// Memory assumes nodes with AVX-512 (`packedExpertWeights`), which keep the experts' weights packed too
    /// (AVX2 nodes pack them too, in narrower panels: at most as many bytes).
    public init(_ c: RunConfig, worldSize W: Int, expertParallel G: Int,
                packedExpertWeights: PackedMatmul.Kernel? = .avx512) {
        let m = c.model, f = c.moe
        let d = m.dModel, T = m.seqLen, R = m.depth, k = f.topK, E = f.numExperts
        worldSize = W
        expertParallel = G
        expertReplicas = W / max(G, 1)
        microBatch = c.train.microBatch
        if c.train.globalBatch % (c.train.microBatch * W) == 0 {
            globalBatch = c.train.globalBatch
        } else {
            globalBatch = c.train.microBatch * W
        }
        microSteps = globalBatch / (microBatch * W)
        let N = microBatch * T
        tokensPerRankPerStep = microSteps * N

        let cost = ModelCost(c)
        totalParameters = cost.totalParameters
        trunkParameters = cost.totalParameters - cost.expertParameters
        memory = MemoryEstimate(c, expertParallel: G, microBatch: microBatch, worldSize: W,
                                packedExpertWeights: packedExpertWeights)
        parametersPerRank = memory.parameters
        expertParametersPerRank = memory.parameters - trunkParameters
        flopsPerToken = cost.flopsPerToken
        flopsPerRankPerStep = cost.flopsPerToken * Double(tokensPerRankPerStep)

        if f.isDense {
            allToAllBytesPerRank = 0
            allReduceStatsBytes = 0
        } else {
            allToAllBytesPerRank = 16 * Double(microSteps * R * N * k * d) * Double(G - 1) / Double(G)
            allReduceStatsBytes = 8 * (E + 4 + k * E) * microSteps * R   // GlobalRoutingSums
        }
        allReduceTrunkBytes = 4 * trunkParameters
        allReduceExpertBytes = expertReplicas > 1 ? 4 * expertParametersPerRank : 0
        func ring(_ bytes: Int, _ n: Int) -> Double { n > 1 ? 2 * Double(bytes) * Double(n - 1) / Double(n) : 0 }
        allReduceRingBytesPerRank = ring(allReduceTrunkBytes, W) + ring(allReduceExpertBytes, expertReplicas)
            + ring(allReduceStatsBytes, W)
    }

    /// The default expert-group size for W ranks: the configured parallel.expert_parallel when it fits,
    /// else the largest divisor of W that is at most E (every rank of a group holds at least one expert).
    public static func defaultExpertParallel(_ c: RunConfig, worldSize W: Int) -> Int {
        if c.moe.isDense { return 1 }
        if let g = c.parallel.expertParallel, W % g == 0, g <= c.moe.numExperts { return g }
        var best = 1
        for g in 1 ... W where W % g == 0 && g <= c.moe.numExperts { best = g }
        return best
    }
}

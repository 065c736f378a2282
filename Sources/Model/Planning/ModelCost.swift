// Parameter counts and model FLOPs of a configuration, computed from the config
// alone (no allocation), for the start-up banner, MFU and cluster estimates.
import Configuration

public struct ModelCost: Sendable {
    /// Every parameter of the model (all experts).
    public let totalParameters: Int
    /// Parameters inside expert pools (w1, w3, w2 of every expert).
    public let expertParameters: Int
    /// Parameters one token's forward pass touches: all non-expert parameters plus top_k experts of
    /// every pool it visits (R pools when indexed, the one shared pool counted once when shared).
    public let activeParameters: Int
    /// Model FLOPs per trained token (forward + backward), at the configured seq_len:
    ///   6 · (matmul parameters used per token, counting each iteration's use of shared weights)
    /// + 6 · R · T · d                                      (causal attention: QKᵀ and PV)
    /// where matmul parameters per token = R · (4d² + d·E + k·(2 or 3)·d·F) + d·V (head), summed from the
    /// model's tensor table (ModelTensors.list) by `matmulParametersPerToken`.
    public let flopsPerToken: Double

    public init(_ c: RunConfig) {
        let m = c.model, f = c.moe
        let d = m.dModel, R = m.depth, F = f.dFF
        let mats = f.activation == .swiglu ? 3 : 2
        var total = 0, experts = 0
        for t in ModelTensors.list(c) {
            let n = t.shape.reduce(1, *)
            total += n
            if t.isExpert { experts += n }
        }
        let pools = f.experts == .shared ? 1 : R
        let perExpert = mats * d * F
        let activeExperts = f.isDense ? 0 : f.topK * perExpert * pools
        expertParameters = experts
        totalParameters = total
        activeParameters = total - experts + activeExperts
        flopsPerToken = 6 * Double(ModelCost.matmulParametersPerToken(c)) + 6 * Double(R * m.seqLen * d)
    }

    /// Weights one token multiplies by in a forward pass, from the tensor table: each tensor's elements times
    /// its uses per token (a block or pool shared by the R iterations is used R times; an expert tensor's
    /// top_k experts of its E), the tied embedding once as the head; norms, depth embeddings and the embedding
    /// lookup do no products.
    public static func matmulParametersPerToken(_ c: RunConfig) -> Int {
        let R = c.model.depth
        var total = 0
        for t in ModelTensors.list(c) {
            let elements = t.shape.reduce(1, *)
            switch t.kind {
            case .embed: total += c.model.tieEmbeddings ? elements : 0
            case .lmHead: total += elements
            case .wq, .wk, .wv, .wo: total += elements * R / c.model.numBlocks
            case .router where t.routerIteration != nil: total += elements   // a per-iteration router: its one iteration
            case .router, .w1, .w2, .w3:
                let uses = R / (c.moe.experts == .shared ? 1 : R)
                total += (t.isExpert ? elements / c.moe.numExperts * c.moe.topK : elements) * uses
            case .depthEmbed, .attnNorm, .ffnNorm, .finalNorm: break
            }
        }
        return total
    }
}

// Every parameter of the model in one allocation, with a table of named views
// (SPEC section 2). Gradients and both AdamW moments use the same layout, so the
// optimizer is one flat loop and the trunk all-reduce is one flat buffer.
//
// Layout: trunk tensors first (replicated on every rank, data-parallel), then
// expert tensors (each rank holds only the rows of the experts it owns).
import Configuration
import Kernels

/// One named tensor of the model.
public struct ParameterInfo: Sendable {
    /// SPEC section 2 path, e.g. `blocks/0/wq` or `ffn/0/w1`.
    public let path: String
    /// Global shape (all experts).
    public let shape: [Int]
    /// True when the first axis is the expert axis and this rank holds only `localRows` of it.
    public let isExpert: Bool
    /// Rows of the first axis held here (the whole axis for trunk tensors).
    public let localRows: Range<Int>
    /// Offset of the local slice in the flat buffers.
    public let offset: Int
    /// Elements held here.
    public let count: Int
    /// AdamW weight decay applies (two or more dimensions, not `depth_embed`).
    public let decays: Bool
    /// Elements per first-axis row.
    public var rowSize: Int { shape.dropFirst().reduce(1, *) }
    /// Elements of the global tensor.
    public var globalCount: Int { shape.reduce(1, *) }
}

public final class ParameterStore {
    public let infos: [ParameterInfo]
    /// Elements held on this rank.
    public let count: Int
    /// Elements of the trunk (replicated) part, which comes first: `0 ..< trunkCount`.
    public let trunkCount: Int
    public let params: UnsafeMutablePointer<Float>
    public let grads: UnsafeMutablePointer<Float>
    public let expAvg: UnsafeMutablePointer<Float>
    public let expAvgSq: UnsafeMutablePointer<Float>
    private let index: [String: Int]

    /// `tensors`: (path, global shape, isExpert) in SPEC order; `localExperts`: rows of
    /// expert tensors this rank holds.
    public init(tensors: [(path: String, shape: [Int], isExpert: Bool)], localExperts: Range<Int>) {
        var infos: [ParameterInfo] = []
        var offset = 0, trunk = 0
        // Trunk first, then experts, each in SPEC order.
        for pass in [false, true] {
            for t in tensors where t.isExpert == pass {
                let rows = t.isExpert ? localExperts : 0 ..< t.shape[0]
                let n = rows.count * t.shape.dropFirst().reduce(1, *)
                infos.append(ParameterInfo(path: t.path, shape: t.shape, isExpert: t.isExpert, localRows: rows,
                                           offset: offset, count: n,
                                           decays: t.shape.count >= 2 && t.path != "depth_embed"))
                offset += n
                if !pass { trunk = offset }
            }
        }
        self.infos = infos
        self.count = offset
        self.trunkCount = trunk
        var idx: [String: Int] = [:]
        for (i, p) in infos.enumerated() { idx[p.path] = i }
        index = idx
        func zeros() -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(offset, 1))
            p.initialize(repeating: 0, count: max(offset, 1))
            return p
        }
        params = zeros(); grads = zeros(); expAvg = zeros(); expAvgSq = zeros()
    }
    deinit {
        params.deallocate(); grads.deallocate(); expAvg.deallocate(); expAvgSq.deallocate()
    }

    public func info(_ path: String) -> ParameterInfo {
        guard let i = index[path] else { preconditionFailure("no parameter named \(path)") }
        return infos[i]
    }
    public func contains(_ path: String) -> Bool { index[path] != nil }

    /// Sets every gradient to zero, on up to `workers` threads.
    public func zeroGrads(workers: Int = 1) {
        Blas.forEachShare(of: count, width: 1, workers: workers) { r in
            (grads + r.lowerBound).update(repeating: 0, count: r.count)
        }
    }

    /// Sum of squares of the gradient over `range` of the flat buffer, in Double (the same value on any
    /// number of threads, see `sumOfSquares`).
    public func gradSquaredNorm(_ range: Range<Int>, workers: Int = 1) -> Double {
        sumOfSquares(grads + range.lowerBound, range.count, workers: workers)
    }
}

// MARK: - The buffers of a configuration (SPEC section 6: stored, never trained)

public enum ModelBuffers {
    /// Paths (under `/buffers/`) of the routers' selection biases, in router order (pools, or iterations with
    /// moe.routers = per_iteration); empty unless moe.router_bias_rate > 0. Each is `[E]`.
    public static func routerBiasPaths(_ c: RunConfig) -> [String] {
        guard !c.moe.isDense, c.moe.routerBiasRate > 0 else { return [] }
        if c.moe.routers == .perIteration { return (0 ..< c.model.depth).map { "ffn/0/router_bias/\($0)" } }
        return (0 ..< (c.moe.experts == .shared ? 1 : c.model.depth)).map { "ffn/\($0)/router_bias" }
    }
}

// MARK: - The tensors of a configuration (SPEC section 2)

public enum ModelTensors {
    /// (path, global shape, isExpert) in SPEC order, for `config`'s architecture.
    public static func list(_ c: RunConfig) -> [(path: String, shape: [Int], isExpert: Bool)] {
        let m = c.model, f = c.moe
        let d = m.dModel, V = m.vocabSize, R = m.depth
        var t: [(String, [Int], Bool)] = [("embed", [V, d], false)]
        if m.depthEmbedding { t.append(("depth_embed", [R, d], false)) }
        for i in 0 ..< m.numBlocks {
            t.append(("blocks/\(i)/attn_norm", [d], false))
            for w in ["wq", "wk", "wv", "wo"] { t.append(("blocks/\(i)/\(w)", [d, d], false)) }
            t.append(("blocks/\(i)/ffn_norm", [d], false))
        }
        let pools = f.experts == .shared ? 1 : R
        for p in 0 ..< pools {
            if f.isDense {
                t.append(("ffn/\(p)/w1", [d, f.dFF], false))
                if f.activation == .swiglu { t.append(("ffn/\(p)/w3", [d, f.dFF], false)) }
                t.append(("ffn/\(p)/w2", [f.dFF, d], false))
            } else {
                let E = f.numExperts
                if f.routers == .perIteration {   // one router per iteration over the shared pool
                    for r in 0 ..< R { t.append(("ffn/\(p)/router/\(r)", [d, E], false)) }
                } else {
                    t.append(("ffn/\(p)/router", [d, E], false))
                }
                t.append(("ffn/\(p)/w1", [E, d, f.dFF], true))
                if f.activation == .swiglu { t.append(("ffn/\(p)/w3", [E, d, f.dFF], true)) }
                t.append(("ffn/\(p)/w2", [E, f.dFF, d], true))
            }
        }
        t.append(("final_norm", [d], false))
        if !m.tieEmbeddings { t.append(("lm_head", [d, V], false)) }
        return t
    }
}

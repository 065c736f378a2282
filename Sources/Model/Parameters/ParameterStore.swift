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
    /// What it is, and its block or pool (ModelTensor).
    public let kind: TensorKind
    public let index: Int
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

    /// `tensors`: the model's table in SPEC order (ModelTensors.list); `localExperts`: rows of
    /// expert tensors this rank holds.
    public init(tensors: [ModelTensor], localExperts: Range<Int>) {
        var infos: [ParameterInfo] = []
        var offset = 0, trunk = 0
        // Trunk first, then experts, each in SPEC order.
        for pass in [false, true] {
            for t in tensors where t.isExpert == pass {
                let rows = t.isExpert ? localExperts : 0 ..< t.shape[0]
                let n = rows.count * t.shape.dropFirst().reduce(1, *)
                infos.append(ParameterInfo(path: t.path, kind: t.kind, index: t.index, shape: t.shape,
                                           isExpert: t.isExpert, localRows: rows, offset: offset, count: n,
                                           decays: t.shape.count >= 2 && t.kind != .depthEmbed))
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
        return ModelTensors.list(c).compactMap(\.selectionBiasPath)
    }
}

// MARK: - The tensors of a configuration (SPEC section 2)

/// What a tensor of the model is. The table of a configuration (`ModelTensors.list`) gives every tensor
/// its kind and index; its path is spelt from them here only, and the store, the typed views
/// (ParameterTensors), the initialisation and the cost model go by the kind, never by parsing a path.
public enum TensorKind: Hashable, Sendable {
    case embed, depthEmbed
    case attnNorm, wq, wk, wv, wo, ffnNorm         // blocks/<block>/...
    case router, w1, w3, w2                         // ffn/<pool>/...; router/<iteration> with moe.routers = per_iteration
    case finalNorm, lmHead

    /// RMSNorm weights (initialised to 1).
    public var isNorm: Bool { self == .attnNorm || self == .ffnNorm || self == .finalNorm }
    /// The products that write into the residual stream (initialised with std scaled by 1/sqrt(2R)).
    public var isResidualOutput: Bool { self == .wo || self == .w2 }
}

/// One tensor of the model's table: its SPEC section 2 path, global shape, expert axis, kind and index.
public struct ModelTensor: Sendable {
    public let kind: TensorKind
    /// The attention block (`blocks/<i>`) or FFN pool (`ffn/<p>`) it belongs to; 0 for the others.
    public let index: Int
    /// The iteration of a per-iteration router (`ffn/0/router/<r>`), else nil.
    public let routerIteration: Int?
    /// Global shape (all experts).
    public let shape: [Int]
    /// True when the first axis is the expert axis.
    public let isExpert: Bool

    public init(_ kind: TensorKind, _ index: Int, routerIteration: Int? = nil, _ shape: [Int], isExpert: Bool = false) {
        self.kind = kind; self.index = index; self.routerIteration = routerIteration
        self.shape = shape; self.isExpert = isExpert
    }
    /// One of the model's single tensors (embed, depth_embed, final_norm, lm_head).
    public init(_ kind: TensorKind, _ shape: [Int]) { self.init(kind, 0, shape) }

    /// A router's selection bias under `/buffers/` (`ffn/<p>/router_bias`, `ffn/0/router_bias/<r>`); nil for
    /// the other tensors.
    public var selectionBiasPath: String? {
        kind == .router ? "ffn/\(index)/router_bias" + (routerIteration.map { "/\($0)" } ?? "") : nil
    }

    /// The path in checkpoints, exports and gradient dumps, e.g. `blocks/0/wq` or `ffn/0/router/1`.
    public var path: String {
        switch kind {
        case .embed: return "embed"
        case .depthEmbed: return "depth_embed"
        case .attnNorm: return "blocks/\(index)/attn_norm"
        case .wq: return "blocks/\(index)/wq"
        case .wk: return "blocks/\(index)/wk"
        case .wv: return "blocks/\(index)/wv"
        case .wo: return "blocks/\(index)/wo"
        case .ffnNorm: return "blocks/\(index)/ffn_norm"
        case .router: return "ffn/\(index)/router" + (routerIteration.map { "/\($0)" } ?? "")
        case .w1: return "ffn/\(index)/w1"
        case .w3: return "ffn/\(index)/w3"
        case .w2: return "ffn/\(index)/w2"
        case .finalNorm: return "final_norm"
        case .lmHead: return "lm_head"
        }
    }
}

public enum ModelTensors {
    /// The tensors of `config`'s architecture in SPEC order (the order of checkpoints and exports).
    public static func list(_ c: RunConfig) -> [ModelTensor] {
        let m = c.model, d = m.dModel, V = m.vocabSize, R = m.depth
        var t: [ModelTensor] = [ModelTensor(.embed, [V, d])]
        if m.depthEmbedding { t.append(ModelTensor(.depthEmbed, [R, d])) }
        for i in 0 ..< m.numBlocks {
            t.append(ModelTensor(.attnNorm, i, [d]))
            for w in [TensorKind.wq, .wk, .wv, .wo] { t.append(ModelTensor(w, i, [d, d])) }
            t.append(ModelTensor(.ffnNorm, i, [d]))
        }
        for p in 0 ..< (c.moe.experts == .shared ? 1 : R) { t += pool(p, c) }
        t.append(ModelTensor(.finalNorm, [d]))
        if !m.tieEmbeddings { t.append(ModelTensor(.lmHead, [d, V])) }
        return t
    }

    /// Pool p's tensors: a dense FFN, or its router(s) and expert weights.
    private static func pool(_ p: Int, _ c: RunConfig) -> [ModelTensor] {
        let f = c.moe, d = c.model.dModel, F = f.dFF
        let swiglu = f.activation == .swiglu
        guard !f.isDense else {
            return [ModelTensor(.w1, p, [d, F])] + (swiglu ? [ModelTensor(.w3, p, [d, F])] : []) + [ModelTensor(.w2, p, [F, d])]
        }
        let E = f.numExperts
        let routers = f.routers == .perIteration   // one router per iteration over the shared pool
            ? (0 ..< c.model.depth).map { ModelTensor(.router, p, routerIteration: $0, [d, E]) }
            : [ModelTensor(.router, p, [d, E])]
        return routers + [ModelTensor(.w1, p, [E, d, F], isExpert: true)]
            + (swiglu ? [ModelTensor(.w3, p, [E, d, F], isExpert: true)] : [])
            + [ModelTensor(.w2, p, [E, F, d], isExpert: true)]
    }
}

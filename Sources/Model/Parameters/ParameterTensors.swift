// Typed views of the model's tensors (llm.c's ParameterTensors): pointers into one of the
// ParameterStore's flat buffers (parameters or gradients), looked up by path once when the model is
// built, so a training step never builds or hashes a tensor name. d = model.d_model, V = vocab_size,
// R = depth, E = num_experts, L = experts held on this rank, F = d_ff.
import Configuration

/// One attention block's tensors (SPEC section 2: `blocks/i/...`).
struct BlockTensors {
    let attnNorm: UnsafeMutablePointer<Float>   // [d]
    let wq: UnsafeMutablePointer<Float>         // [d, d]
    let wk: UnsafeMutablePointer<Float>         // [d, d]
    let wv: UnsafeMutablePointer<Float>         // [d, d]
    let wo: UnsafeMutablePointer<Float>         // [d, d]
    let ffnNorm: UnsafeMutablePointer<Float>    // [d]
}

/// One feed-forward pool's tensors (`ffn/p/...`): the router(s) and this rank's expert slices, or a dense FFN.
struct PoolTensors {
    let routers: [UnsafeMutablePointer<Float>]  // [d, E] each: one (`ffn/p/router`), R (`ffn/0/router/r`), none (dense)
    let w1: UnsafeMutablePointer<Float>         // [L, d, F] ([d, F] dense)
    let w3: UnsafeMutablePointer<Float>?        // [L, d, F] ([d, F] dense), swiglu only
    let w2: UnsafeMutablePointer<Float>         // [L, F, d] ([F, d] dense)

    /// Local expert `le`'s slice (le = 0 for a dense FFN).
    func expert(_ le: Int, d: Int, F: Int) -> FFNWeights {
        FFNWeights(w1: w1 + le * d * F, w3: w3.map { $0 + le * d * F }, w2: w2 + le * F * d)
    }
}

/// Every tensor of the model in one of the store's buffers.
struct ParameterTensors {
    let embed: UnsafeMutablePointer<Float>        // [V, d]
    let depthEmbed: UnsafeMutablePointer<Float>?  // [R, d] (model.depth_embedding)
    let blocks: [BlockTensors]                    // [1] (trunk shared) or [R] (indexed)
    let pools: [PoolTensors]                      // [1] (experts shared) or [R] (indexed)
    let finalNorm: UnsafeMutablePointer<Float>    // [d]
    let lmHead: UnsafeMutablePointer<Float>?      // [d, V] (untied head only)

    /// Views into `base` (the store's `params`, `grads`, or a moment buffer) for `config`'s tensors, placed by
    /// each tensor's kind and block or pool (the table of ModelTensors.list, as the store holds it).
    init(_ store: ParameterStore, _ base: UnsafeMutablePointer<Float>, config c: RunConfig) {
        typealias Views = [TensorKind: UnsafeMutablePointer<Float>]
        var model: Views = [:]
        var blocks = [Views](repeating: [:], count: c.model.numBlocks)
        var pools = [Views](repeating: [:], count: c.moe.experts == .shared ? 1 : c.model.depth)
        var routers = [[UnsafeMutablePointer<Float>]](repeating: [], count: pools.count)
        for p in store.infos {
            let at = base + p.offset
            switch p.kind {
            case .embed, .depthEmbed, .finalNorm, .lmHead: model[p.kind] = at
            case .attnNorm, .wq, .wk, .wv, .wo, .ffnNorm: blocks[p.index][p.kind] = at
            case .router: routers[p.index].append(at)      // per-iteration routers come in iteration order
            case .w1, .w3, .w2: pools[p.index][p.kind] = at
            }
        }
        embed = model[.embed]!
        depthEmbed = model[.depthEmbed]
        self.blocks = blocks.map { b in
            BlockTensors(attnNorm: b[.attnNorm]!, wq: b[.wq]!, wk: b[.wk]!, wv: b[.wv]!, wo: b[.wo]!, ffnNorm: b[.ffnNorm]!)
        }
        self.pools = zip(pools, routers).map { p, r in PoolTensors(routers: r, w1: p[.w1]!, w3: p[.w3], w2: p[.w2]!) }
        finalNorm = model[.finalNorm]!
        lmHead = model[.lmHead]
    }

    /// The block iteration r runs (`model.trunk`) and the pool it uses (`moe.experts`).
    func block(_ r: Int) -> BlockTensors { blocks[blocks.count == 1 ? 0 : r] }
    func pool(_ r: Int) -> PoolTensors { pools[pools.count == 1 ? 0 : r] }
    /// The router iteration r uses (`moe.routers`): its pool's, or its own over the shared pool.
    func router(_ r: Int) -> UnsafeMutablePointer<Float> {
        let routers = pool(r).routers
        return routers[routers.count == 1 ? 0 : r]
    }
}

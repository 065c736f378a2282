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

    /// Views into `base` (the store's `params`, `grads`, or a moment buffer) for `config`'s tensors.
    init(_ store: ParameterStore, _ base: UnsafeMutablePointer<Float>, config c: RunConfig) {
        func at(_ path: String) -> UnsafeMutablePointer<Float> { base + store.info(path).offset }
        func optional(_ path: String) -> UnsafeMutablePointer<Float>? { store.contains(path) ? at(path) : nil }
        embed = at("embed")
        depthEmbed = optional("depth_embed")
        blocks = (0 ..< c.model.numBlocks).map { i in
            BlockTensors(attnNorm: at("blocks/\(i)/attn_norm"), wq: at("blocks/\(i)/wq"), wk: at("blocks/\(i)/wk"),
                         wv: at("blocks/\(i)/wv"), wo: at("blocks/\(i)/wo"), ffnNorm: at("blocks/\(i)/ffn_norm"))
        }
        pools = (0 ..< (c.moe.experts == .shared ? 1 : c.model.depth)).map { p in
            let routers = c.moe.isDense ? [] : c.moe.routers == .perIteration
                ? (0 ..< c.model.depth).map { at("ffn/\(p)/router/\($0)") } : [at("ffn/\(p)/router")]
            return PoolTensors(routers: routers, w1: at("ffn/\(p)/w1"), w3: optional("ffn/\(p)/w3"), w2: at("ffn/\(p)/w2"))
        }
        finalNorm = at("final_norm")
        lmHead = optional("lm_head")
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

// The recurrent MoE language model of SPEC section 3.
//
//   h = embed[x]
//   for r in 0 ..< R (block i = trunk shared ? 0 : r, pool p = experts shared ? 0 : r):
//       h = h + depth_embed[r]                      (if depth embeddings)
//       h = h + Attn_i(RMSNorm(h; attn_norm_i))
//       h = h + FFN_p(RMSNorm(h; ffn_norm_i))
//   logits = RMSNorm(h; final_norm) · (tied ? embedᵀ : lm_head)
//
// Forward saves what backward needs, per iteration; backward walks the forward
// in exact reverse order and adds into the gradients of the ParameterStore.
import Kernels
import Configuration
import Collectives

/// How one micro-step's loss terms enter the loss of the optimizer step.
public struct LossScales: Sendable {
    /// 1 / (target tokens of the whole optimizer step, all ranks and micro-steps).
    public var ce: Double
    /// aux_loss_coef / (micro-steps · R).
    public var aux: Double
    /// z_loss_coef / (micro-steps · R).
    public var z: Double
    public init(ce: Double, aux: Double, z: Double) { self.ce = ce; self.aux = aux; self.z = z }
}

/// The result of one micro-batch on this rank.
public struct MicroStepResult: Sendable {
    /// Σ of the token NLLs of this rank's targets.
    public var ceSum: Double = 0
    /// Target tokens scored on this rank.
    public var targets: Int = 0
    /// Routing statistics per iteration over the global micro-batch (empty for dense runs).
    public var routing: [RoutingStats] = []
}

/// Saved activations of one recurrent iteration; sizes in comments are for N = B·T tokens.
final class IterationActivations {
    let hIn = FloatBuffer()    // [N,d] residual entering the iteration (after the depth embedding)
    let rstd1 = FloatBuffer()  // [N]
    let a1 = FloatBuffer()     // [N,d] RMSNorm(hIn)
    let q = FloatBuffer(), k = FloatBuffer(), v = FloatBuffer()   // [N,d] (q, k rotated)
    let probs = FloatBuffer()  // [B,H,T,T]
    let att = FloatBuffer()    // [N,d] attention output before wo
    let hMid = FloatBuffer()   // [N,d] residual after attention
    let rstd2 = FloatBuffer()  // [N]
    let u = FloatBuffer()      // [N,d] RMSNorm(hMid): the FFN input
    let ffn = MoEUseState()    // router, dispatch and expert (or dense FFN) activations
}

public final class RecurrentMoEModel {
    public let config: RunConfig
    public let store: ParameterStore
    public let ctx: ParallelContext
    private let rope: RopeTable
    private let moe: MoELayer?
    private var acts: [IterationActivations]
    // Working buffers
    private let h = FloatBuffer(), xFinal = FloatBuffer(), rstdFinal = FloatBuffer()
    private let logits = FloatBuffer(), losses = FloatBuffer(), ffnOut = FloatBuffer()
    private let dh = FloatBuffer(), dtmp = FloatBuffer(), dq = FloatBuffer(), dk = FloatBuffer(), dv = FloatBuffer()
    private let dtmp2 = FloatBuffer(), scratchTT = FloatBuffer()
    private let dactScratch = FloatBuffer(), dh1Scratch = FloatBuffer(), dh3Scratch = FloatBuffer()
    private var lastInputs: [Int32] = []
    /// Finite-difference checks: forward passes reuse the routing decisions (top-k sets, drops, f_e) of the
    /// last forward pass instead of deciding anew, so the loss is smooth in the parameters.
    public var replayRouting = false
    private var lastB = 0, lastT = 0

    /// Builds the model for `config` (vocab size resolved) on the ranks of `ctx`; parameters are initialised.
    public init(config: RunConfig, ctx: ParallelContext) {
        precondition(config.model.vocabSize > 0, "model.vocab_size must be resolved before building the model")
        self.config = config
        self.ctx = ctx
        let local = config.moe.isDense ? 0 ..< 0 : ctx.localExperts
        store = ParameterStore(tensors: ModelTensors.list(config), localExperts: local)
        store.initialize(seed: config.train.seed, depth: config.model.depth)
        rope = RopeTable(seqLen: config.model.seqLen, headDim: config.model.headDim, base: config.model.ropeBase)
        moe = config.moe.isDense ? nil : MoELayer(cfg: config.moe, dModel: config.model.dModel, ctx: ctx)
        acts = (0 ..< config.model.depth).map { _ in IterationActivations() }
    }

    private var d: Int { config.model.dModel }
    private var V: Int { config.model.vocabSize }
    private var R: Int { config.model.depth }
    private var H: Int { config.model.nHeads }

    private func block(_ r: Int) -> Int { config.model.trunk == .shared ? 0 : r }
    private func pool(_ r: Int) -> Int { config.moe.experts == .shared ? 0 : r }

    private func poolWeights(_ p: Int, grads: Bool) -> PoolWeights {
        let s = store
        func ptr(_ path: String) -> UnsafeMutablePointer<Float> { grads ? s.grad(path) : s.param(path) }
        let swiglu = config.moe.activation == .swiglu
        return PoolWeights(router: config.moe.isDense ? nil : ptr("ffn/\(p)/router"),
                           w1: ptr("ffn/\(p)/w1"), w3: swiglu ? ptr("ffn/\(p)/w3") : nil, w2: ptr("ffn/\(p)/w2"))
    }

    // MARK: forward

    /// Runs the forward pass on B sequences of T ≤ seq_len tokens (inputs and targets [B·T]);
    /// with `backward`, also the backward pass, adding d(loss)/dθ into `store.grads`.
    /// `training` applies the capacity limit (evaluation is always dropless).
    /// Every rank of the world calls this together (B may be 0 on some ranks).
    public func step(inputs: UnsafePointer<Int32>, targets: UnsafePointer<Int32>, B: Int, T: Int,
                     scales: LossScales, training: Bool, backward: Bool) -> MicroStepResult {
        precondition(T <= config.model.seqLen && T > 0)
        let N = B * T, d = self.d, V = self.V, H = self.H
        let c = config
        var result = MicroStepResult()
        lastB = B; lastT = T
        lastInputs = Array(UnsafeBufferPointer(start: inputs, count: N))

        let timer = ctx.timer
        var t0 = PhaseTimer.now()
        // h = embed[x]
        let hp = h.ensure(N * d)
        let embed = store.param("embed")
        for t in 0 ..< N {
            let id = Int(inputs[t])
            precondition(id >= 0 && id < V, "token id \(id) outside the vocabulary (\(V))")
            (hp + t * d).update(from: embed + id * d, count: d)
        }
        t0 = timer.add(.head, since: t0)
        for r in 0 ..< R {
            let A = acts[r], i = block(r)
            let hIn = A.hIn.ensure(N * d)
            hIn.update(from: hp, count: N * d)
            if c.model.depthEmbedding {
                let de = store.param("depth_embed") + r * d
                for t in 0 ..< N { let row = hIn + t * d; for j in 0 ..< d { row[j] += de[j] } }
            }
            // attention
            let a1 = A.a1.ensure(N * d)
            rmsnormForward(a1, A.rstd1.ensure(N), hIn, store.param("blocks/\(i)/attn_norm"), N, d, eps: Float(c.model.normEps))
            let q = A.q.ensure(N * d), k = A.k.ensure(N * d), v = A.v.ensure(N * d)
            matmulForward(q, a1, store.param("blocks/\(i)/wq"), N, d, d)
            matmulForward(k, a1, store.param("blocks/\(i)/wk"), N, d, d)
            matmulForward(v, a1, store.param("blocks/\(i)/wv"), N, d, d)
            ropeForward(q, rope, B, T, d, H)
            ropeForward(k, rope, B, T, d, H)
            let att = A.att.ensure(N * d)
            attentionForward(att, A.probs.ensure(B * H * T * T), q, k, v, B, T, d, H, workers: ctx.blasWorkers)
            let hMid = A.hMid.ensure(N * d)
            hMid.update(from: hIn, count: N * d)
            matmulForward(hMid, att, store.param("blocks/\(i)/wo"), N, d, d, accumulate: true)
            // feed-forward
            let u = A.u.ensure(N * d)
            rmsnormForward(u, A.rstd2.ensure(N), hMid, store.param("blocks/\(i)/ffn_norm"), N, d, eps: Float(c.model.normEps))
            t0 = timer.add(.attention, since: t0)
            let f = ffnOut.ensure(N * d)
            if let moe {
                timeMoE {
                    moe.forward(f, u, pool: poolWeights(pool(r), grads: false), state: A.ffn, N: N,
                                capacityFactor: training ? c.moe.capacityFactor : 0, auxScale: scales.aux, zScale: scales.z,
                                replayRouting: replayRouting)
                }
                result.routing.append(A.ffn.stats)
            } else {
                timer.measure(.experts) { denseForward(f, u, state: A.ffn, pool: pool(r), N: N) }
            }
            for j in 0 ..< N * d { hp[j] = hMid[j] + f[j] }
            t0 = PhaseTimer.now()
        }
        // head and loss
        let xF = xFinal.ensure(N * d)
        rmsnormForward(xF, rstdFinal.ensure(N), hp, store.param("final_norm"), N, d, eps: Float(c.model.normEps))
        let lg = logits.ensure(N * V)
        if c.model.tieEmbeddings { matmulTransposedForward(lg, xF, embed, N, d, V) }
        else { matmulForward(lg, xF, store.param("lm_head"), N, d, V) }
        if N > 0 {
            result.ceSum = crossEntropyForwardBackward(backward ? lg : nil, losses.ensure(N), lg, targets, N, V,
                                                       gradScale: Float(scales.ce))
        }
        result.targets = N
        timer.add(.head, since: t0)
        if backward { self.backward(B: B, T: T) }
        return result
    }

    // MARK: backward

    private func backward(B: Int, T: Int) {
        let N = B * T, d = self.d, V = self.V, H = self.H
        let timer = ctx.timer
        var t0 = PhaseTimer.now()
        let dlogits = logits.pointer                       // overwritten in place by the fused loss
        let dx = dtmp.zeroed(N * d)
        if config.model.tieEmbeddings {
            matmulTransposedBackward(dx, store.grad("embed"), dlogits, xFinal.pointer, store.param("embed"), N, d, V)
        } else {
            matmulBackward(dx, store.grad("lm_head"), dlogits, xFinal.pointer, store.param("lm_head"), N, d, V)
        }
        let g = dh.zeroed(N * d)
        rmsnormBackward(g, store.grad("final_norm"), dx, h.pointer, store.param("final_norm"), rstdFinal.pointer, N, d)

        timer.add(.head, since: t0)
        for r in stride(from: R - 1, through: 0, by: -1) {
            let A = acts[r], i = block(r)
            // feed-forward: g is d(h after the FFN) = d(hMid) along the residual
            let du = dtmp.zeroed(N * d)
            if let moe {
                timeMoE {
                    moe.backward(du, g, A.u.pointer, pool: poolWeights(pool(r), grads: false),
                                 grads: poolWeights(pool(r), grads: true), state: A.ffn, N: N)
                }
            } else {
                timer.measure(.experts) { denseBackward(du, g, A.u.pointer, state: A.ffn, pool: pool(r), N: N) }
            }
            t0 = PhaseTimer.now()
            rmsnormBackward(g, store.grad("blocks/\(i)/ffn_norm"), du, A.hMid.pointer,
                            store.param("blocks/\(i)/ffn_norm"), A.rstd2.pointer, N, d)
            // attention: g is now d(hMid) = d(hIn) along the residual
            let dAtt = dtmp.zeroed(N * d)
            matmulBackward(dAtt, store.grad("blocks/\(i)/wo"), g, A.att.pointer, store.param("blocks/\(i)/wo"), N, d, d)
            let gq = dq.zeroed(N * d), gk = dk.zeroed(N * d), gv = dv.zeroed(N * d)
            attentionBackward(gq, gk, gv, dAtt, A.q.pointer, A.k.pointer, A.v.pointer, A.probs.pointer,
                              scratchTT.ensure(ctx.blasWorkers * T * T), B, T, d, H, workers: ctx.blasWorkers)
            ropeBackward(gq, rope, B, T, d, H)
            ropeBackward(gk, rope, B, T, d, H)
            let da1 = dtmp2.zeroed(N * d)
            matmulBackward(da1, store.grad("blocks/\(i)/wq"), gq, A.a1.pointer, store.param("blocks/\(i)/wq"), N, d, d)
            matmulBackward(da1, store.grad("blocks/\(i)/wk"), gk, A.a1.pointer, store.param("blocks/\(i)/wk"), N, d, d)
            matmulBackward(da1, store.grad("blocks/\(i)/wv"), gv, A.a1.pointer, store.param("blocks/\(i)/wv"), N, d, d)
            rmsnormBackward(g, store.grad("blocks/\(i)/attn_norm"), da1, A.hIn.pointer,
                            store.param("blocks/\(i)/attn_norm"), A.rstd1.pointer, N, d)
            if config.model.depthEmbedding {
                let gde = store.grad("depth_embed") + r * d
                for t in 0 ..< N { let row = g + t * d; for j in 0 ..< d { gde[j] += row[j] } }
            }
            t0 = timer.add(.attention, since: t0)
        }
        let gEmbed = store.grad("embed")
        for t in 0 ..< N {
            let dst = gEmbed + Int(lastInputs[t]) * d, src = g + t * d
            for j in 0 ..< d { dst[j] += src[j] }
        }
        timer.add(.head, since: t0)
    }

    /// Runs an MoE call, charging its time to routerDispatch less what it charged to experts and communication.
    private func timeMoE(_ body: () -> Void) {
        let timer = ctx.timer
        let before = timer.totals()
        let start = PhaseTimer.now()
        body()
        let elapsed = PhaseTimer.now() - start
        let after = timer.totals()
        let inner = [Phase.experts, .allToAll, .allReduce].reduce(0.0) { $0 + after[$1]! - before[$1]! }
        timer.add(.routerDispatch, since: PhaseTimer.now() - (elapsed - inner))
    }

    // MARK: dense FFN (moe.num_experts = 0)

    private func denseForward(_ out: UnsafeMutablePointer<Float>, _ u: UnsafePointer<Float>, state s: MoEUseState, pool p: Int, N: Int) {
        let F = config.moe.dFF
        let h1 = s.h1.ensure(N * F), act = s.act.ensure(N * F)
        let h3 = s.h3.ensure(config.moe.activation == .swiglu ? N * F : 1)
        let w = poolWeights(p, grads: false)
        ExpertFFN.forward(y: out, h1: h1, h3: h3, act: act, x: u, w: FFNWeights(w1: w.w1, w3: w.w3, w2: w.w2),
                          n: N, d: d, F: F, activation: config.moe.activation)
    }

    private func denseBackward(_ du: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>, _ u: UnsafePointer<Float>,
                               state s: MoEUseState, pool p: Int, N: Int) {
        let F = config.moe.dFF
        let w = poolWeights(p, grads: false), gw = poolWeights(p, grads: true)
        let dx = dtmp2.ensure(N * d)
        ExpertFFN.backward(dx: dx, dw: FFNWeights(w1: gw.w1, w3: gw.w3, w2: gw.w2), dy: dout, x: u,
                           h1: s.h1.pointer, h3: s.h3.pointer, act: s.act.pointer,
                           w: FFNWeights(w1: w.w1, w3: w.w3, w2: w.w2),
                           dact: dactScratch.ensure(N * F), dh1: dh1Scratch.ensure(N * F),
                           dh3: dh3Scratch.ensure(config.moe.activation == .swiglu ? N * F : 1),
                           n: N, d: d, F: F, activation: config.moe.activation)
        for j in 0 ..< N * d { du[j] += dx[j] }
    }
}

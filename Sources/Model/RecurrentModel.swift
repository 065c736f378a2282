// The recurrent MoE language model of SPEC section 3.
//
//   h = embed[x]
//   for r in 0 ..< R (block i = trunk shared ? 0 : r, pool p = experts shared ? 0 : r):
//       h = h + depth_embed[r]                      (if depth embeddings)
//       h = h + Attn_i(RMSNorm(h; attn_norm_i))     AttentionBlock
//       h = h + FFN_p(RMSNorm(h; ffn_norm_i))       MoELayer (or a dense FFN)
//   logits = RMSNorm(h; final_norm) · (tied ? embedᵀ : lm_head)
//
// Forward saves what backward needs, per iteration; backward walks the forward in exact reverse order
// and adds into the gradients of the ParameterStore (every backward adds into its input gradients).
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

/// Saved activations of one recurrent iteration; N = B·T tokens.
final class IterationActivations {
    let hIn = FloatBuffer()            // [N,d] residual entering the iteration (after the depth embedding)
    let attention = AttentionActivations()
    let hMid = FloatBuffer()           // [N,d] residual after attention
    let ffnRstd = FloatBuffer()        // [N] of RMSNorm(hMid)
    let ffnInput = FloatBuffer()       // [N,d] RMSNorm(hMid)
    let moe: MoEUseState?              // router, dispatch and expert activations (MoE runs)
    let dense = FFNActivations()       // [N,F] hidden activations of the dense FFN (num_experts = 0)

    init(_ c: RunConfig, ctx: ParallelContext) {
        moe = c.moe.isDense ? nil : MoEUseState(cfg: c.moe, dModel: c.model.dModel, ctx: ctx)
    }

    /// Bytes saved per iteration (buffer table, see MicroBatchShape).
    static func bufferBytes(_ s: MicroBatchShape) -> Int {
        4 * (3 * s.N * s.d + s.N) + AttentionActivations.bufferBytes(s)
            + (s.dense ? FFNActivations.bufferBytes(rows: s.N, s) : MoEUseState.bufferBytes(s))
    }
}

public final class RecurrentMoEModel {
    public let config: RunConfig
    public let store: ParameterStore
    public let ctx: ParallelContext
    private let params: ParameterTensors, grads: ParameterTensors
    private let attention: AttentionBlock
    private let moe: MoELayer?
    private let denseScratch = FFNBackwardScratch()
    private let acts: [IterationActivations]
    // Working buffers, one meaning each; N = B·T tokens.
    private let h = FloatBuffer()              // [N,d] the residual stream
    private let ffnOut = FloatBuffer()         // [N,d] the feed-forward branch's output
    private let headInput = FloatBuffer()      // [N,d] RMSNorm(h; final_norm)
    private let headRstd = FloatBuffer()       // [N]
    private let logits = FloatBuffer()         // [N,V] logits; the fused loss turns them into dlogits in place
    private let losses = FloatBuffer()         // [N] token NLLs
    private let tokenIDs = Buffer<Int32>()     // [N] inputs of the last forward (for the embedding gradient)
    private let residualGrad = FloatBuffer()   // [N,d] d(loss)/d(h), walked back through the iterations
    private let headInputGrad = FloatBuffer()  // [N,d] d(loss)/d(headInput)
    private let ffnInputGrad = FloatBuffer()   // [N,d] d(loss)/d(ffnInput)
    private var result = MicroStepResult()
    /// Selection biases [Q, E] of the Q routers (moe.router_bias_rate > 0; empty otherwise): buffers, never
    /// trained, the same on every rank; the trainer moves them after each update (`updateSelectionBias`).
    public let selectionBias = FloatBuffer()
    /// Routers: one per pool, or one per iteration (moe.routers); 0 for dense runs.
    public let routerCount: Int
    private let routerCounts = Buffer<Int64>()   // [E] one router's counts for the bias rule
    /// Finite-difference checks: forward passes reuse the routing decisions (top-k sets, drops, f_e) of the
    /// last forward pass instead of deciding anew, so the loss is smooth in the parameters.
    public var replayRouting = false

    /// Bytes of the buffers saved once per micro-batch (h, head input and rstd, logits, losses, token ids).
    static func savedOnceBytes(_ s: MicroBatchShape) -> Int { 4 * (2 * s.N * s.d + s.N + s.N * s.V + 2 * s.N) }

    /// Bytes of the working buffers (FFN output, the three gradients) and of every part's scratch.
    static func scratchBytes(_ s: MicroBatchShape) -> Int {
        4 * 4 * s.N * s.d + AttentionBlock.scratchBytes(s)
            + (s.dense ? FFNBackwardScratch.bufferBytes(rows: s.N, s) : MoELayer.scratchBytes(s))
    }

    /// Builds the model for `config` (vocab size resolved) on the ranks of `ctx`; parameters are initialised.
    public init(config: RunConfig, ctx: ParallelContext) {
        precondition(config.model.vocabSize > 0, "model.vocab_size must be resolved before building the model")
        self.config = config
        self.ctx = ctx
        let local = config.moe.isDense ? 0 ..< 0 : ctx.localExperts
        store = ParameterStore(tensors: ModelTensors.list(config), localExperts: local)
        store.initialize(seed: config.train.seed, depth: config.model.depth, workers: ctx.blasWorkers)
        params = ParameterTensors(store, store.params, config: config)
        grads = ParameterTensors(store, store.grads, config: config)
        attention = AttentionBlock(config.model, workers: ctx.blasWorkers)
        moe = config.moe.isDense ? nil : MoELayer(cfg: config.moe, dModel: config.model.dModel, ctx: ctx)
        acts = (0 ..< config.model.depth).map { _ in IterationActivations(config, ctx: ctx) }
        routerCount = config.moe.isDense ? 0 : config.moe.routers == .perIteration ? config.model.depth : params.pools.count
        if config.moe.routerBiasRate > 0 { selectionBias.zeroed(routerCount * config.moe.numExperts) }
        result.routing.reserveCapacity(config.model.depth)
    }

    /// The logits [B·T, V] of the last forward pass without backward (the backward pass overwrites them with
    /// dlogits); valid until the next step. Inference tests compare against them.
    public var lastLogits: UnsafePointer<Float> { UnsafePointer(logits.pointer) }

    /// The router iteration r uses: its pool's (per_pool) or its own (per_iteration).
    public func routerIndex(iteration r: Int) -> Int { routerCount == config.model.depth ? r : (routerCount == 1 ? 0 : r) }

    /// b_q += rate·sign(mean − c) for each router q, from the optimizer step's assignment counts per
    /// iteration [R·E] (summed over the iterations that share the router). SPEC section 3.
    public func updateSelectionBias(iterationCounts: UnsafePointer<Int64>) {
        let E = config.moe.numExperts, rate = Float(config.moe.routerBiasRate)
        guard rate > 0, routerCount > 0 else { return }
        let counts = routerCounts.ensure(E)
        for q in 0 ..< routerCount {
            for e in 0 ..< E { counts[e] = 0 }
            for r in 0 ..< R where routerIndex(iteration: r) == q {
                for e in 0 ..< E { counts[e] += iterationCounts[r * E + e] }
            }
            stepSelectionBias(selectionBias.pointer + q * E, counts: counts, E, rate: rate)
        }
    }

    /// What iteration r routes with: its router's weight, gradient and bias, and the previous iteration's
    /// selection when both use the shared pool (for /experts/agreement).
    private func routerUse(_ r: Int, T: Int) -> RouterUse {
        let E = config.moe.numExperts
        let bias = config.moe.routerBiasRate > 0 ? UnsafePointer(selectionBias.pointer + routerIndex(iteration: r) * E) : nil
        let previous = r > 0 && config.moe.experts == .shared ? UnsafePointer(acts[r - 1].moe!.router.selected.pointer) : nil
        return RouterUse(weight: params.router(r), weightGrad: grads.router(r), bias: bias, previousSelection: previous, T: T)
    }

    private var d: Int { config.model.dModel }
    private var V: Int { config.model.vocabSize }
    private var R: Int { config.model.depth }

    // MARK: forward

    /// Runs the forward pass on B sequences of T ≤ seq_len tokens (inputs and targets [B·T]);
    /// with `backward`, also the backward pass, adding d(loss)/dθ into `store.grads`.
    /// `applyCapacity`: apply moe.capacity_factor (training); evaluation passes false and is always dropless.
    /// Every rank of the world calls this together (B may be 0 on some ranks).
    public func step(inputs: UnsafePointer<Int32>, targets: UnsafePointer<Int32>, B: Int, T: Int,
                     scales: LossScales, applyCapacity: Bool, backward: Bool) -> MicroStepResult {
        precondition(T <= config.model.seqLen && T > 0)
        let N = B * T
        result.ceSum = 0
        result.targets = N
        result.routing.removeAll(keepingCapacity: true)
        moe?.beginPass()
        var t0 = PhaseTimer.now()
        embed(inputs, N: N)
        t0 = ctx.timer.add(.head, since: t0)
        for r in 0 ..< R {
            iterationForward(r, B: B, T: T, scales: scales, capacityFactor: applyCapacity ? config.moe.capacityFactor : 0)
        }
        t0 = PhaseTimer.now()
        headForward(targets, N: N, scales: scales, backward: backward)
        ctx.timer.add(.head, since: t0)
        if backward { self.backward(B: B, T: T) }
        return result
    }

    /// h[N,d] = embed[inputs]; remembers the ids for the embedding gradient.
    private func embed(_ inputs: UnsafePointer<Int32>, N: Int) {
        let hp = h.ensure(N * d), ids = tokenIDs.ensure(N)
        for t in 0 ..< N {
            let id = Int(inputs[t])
            precondition(id >= 0 && id < V, "token id \(id) outside the vocabulary (\(V))")
            ids[t] = inputs[t]
            (hp + t * d).update(from: params.embed + id * d, count: d)
        }
    }

    /// One recurrent iteration: h ← h + Attn(RMSNorm(h)) + FFN(RMSNorm(·)), saving into acts[r].
    private func iterationForward(_ r: Int, B: Int, T: Int, scales: LossScales, capacityFactor: Double) {
        let N = B * T, A = acts[r], block = params.block(r)
        let t0 = PhaseTimer.now()
        let hp = h.pointer, hIn = A.hIn.ensure(N * d)
        hIn.update(from: hp, count: N * d)
        if let de = params.depthEmbed.map({ $0 + r * d }) {
            for t in 0 ..< N { let row = hIn + t * d; for j in 0 ..< d { row[j] += de[j] } }
        }
        let hMid = A.hMid.ensure(N * d)
        attention.forward(hMid, hIn, block, saved: A.attention, B: B, T: T)
        let u = A.ffnInput.ensure(N * d)
        rmsnormForward(u, A.ffnRstd.ensure(N), hMid, block.ffnNorm, N, d, eps: Float(config.model.normEps),
                       workers: ctx.blasWorkers)
        ctx.timer.add(.attention, since: t0)
        let f = ffnOut.ensure(N * d)
        if let moe, let state = A.moe {
            timeMoE {
                moe.forward(f, u, pool: params.pool(r), router: routerUse(r, T: T), state: state, N: N, capacityFactor: capacityFactor,
                            auxScale: scales.aux, zScale: scales.z, replayRouting: replayRouting)
            }
            result.routing.append(state.router.stats)
        } else {
            let c = config.moe
            A.dense.ensure(rows: N, F: c.dFF, activation: c.activation)
            ctx.timer.measure(.experts) {
                ExpertFFN.forward(y: f, h1: A.dense.h1.pointer, h3: A.dense.h3.pointer, act: A.dense.act.pointer, x: u,
                                  w: params.pool(r).expert(0, d: d, F: c.dFF), n: N, d: d, F: c.dFF, activation: c.activation,
                                  workers: ctx.blasWorkers)
            }
        }
        for j in 0 ..< N * d { hp[j] = hMid[j] + f[j] }
    }

    /// Final norm, logits and the fused cross-entropy (which leaves dlogits in `logits` when training).
    private func headForward(_ targets: UnsafePointer<Int32>, N: Int, scales: LossScales, backward: Bool) {
        let x = headInput.ensure(N * d)
        rmsnormForward(x, headRstd.ensure(N), h.pointer, params.finalNorm, N, d, eps: Float(config.model.normEps),
                       workers: ctx.blasWorkers)
        let lg = logits.ensure(N * V)
        let workers = ctx.blasWorkers
        if let head = params.lmHead { matmulForward(lg, x, head, N, d, V, workers: workers) } else {
            matmulTransposedForward(lg, x, params.embed, N, d, V, workers: workers)
        }
        if N > 0 {
            result.ceSum = crossEntropyLossAndGradient(backward ? lg : nil, losses.ensure(N), lg, targets, N, V,
                                                       gradScale: Float(scales.ce), workers: ctx.blasWorkers)
        }
    }

    // MARK: backward

    private func backward(B: Int, T: Int) {
        let N = B * T
        var t0 = PhaseTimer.now()
        headBackward(N: N)
        t0 = ctx.timer.add(.head, since: t0)
        for r in stride(from: R - 1, through: 0, by: -1) { iterationBackward(r, B: B, T: T) }
        t0 = PhaseTimer.now()
        let g = residualGrad.pointer, ids = tokenIDs.pointer
        for t in 0 ..< N {
            let dst = grads.embed + Int(ids[t]) * d, src = g + t * d
            for j in 0 ..< d { dst[j] += src[j] }
        }
        ctx.timer.add(.head, since: t0)
    }

    /// residualGrad = d(loss)/d(h) at the end of the iterations, from the dlogits the loss left in `logits`.
    private func headBackward(N: Int) {
        let dlogits = logits.pointer, dx = headInputGrad.zeroed(N * d)
        if let head = params.lmHead {
            matmulBackward(dx, grads.lmHead!, dlogits, headInput.pointer, head, N, d, V, workers: ctx.blasWorkers)
        } else {
            matmulTransposedBackward(dx, grads.embed, dlogits, headInput.pointer, params.embed, N, d, V,
                                     workers: ctx.blasWorkers)
        }
        rmsnormBackward(residualGrad.zeroed(N * d), grads.finalNorm, dx, h.pointer, params.finalNorm, headRstd.pointer, N, d,
                        workers: ctx.blasWorkers)
    }

    /// Iteration r in reverse: residualGrad goes from d(loss)/d(h after r) to d(loss)/d(h before r).
    private func iterationBackward(_ r: Int, B: Int, T: Int) {
        let N = B * T, A = acts[r], g = residualGrad.pointer
        let du = ffnInputGrad.zeroed(N * d)
        if let moe, let state = A.moe {
            timeMoE {
                moe.backward(du, g, A.ffnInput.pointer, pool: params.pool(r), grads: grads.pool(r), router: routerUse(r, T: T),
                             state: state, N: N)
            }
        } else {
            ctx.timer.measure(.experts) { denseBackward(du, g, A, pool: r, N: N) }
        }
        let t0 = PhaseTimer.now()
        let block = params.block(r), blockGrads = grads.block(r)
        rmsnormBackward(g, blockGrads.ffnNorm, du, A.hMid.pointer, block.ffnNorm, A.ffnRstd.pointer, N, d,
                        workers: ctx.blasWorkers)
        attention.backward(g, A.hIn.pointer, block, blockGrads, saved: A.attention, B: B, T: T)
        if let gde = grads.depthEmbed.map({ $0 + r * d }) {
            for t in 0 ..< N { let row = g + t * d; for j in 0 ..< d { gde[j] += row[j] } }
        }
        ctx.timer.add(.attention, since: t0)
    }

    /// du[N,d] += and the dense FFN's weight gradients += from dout[N,d].
    private func denseBackward(_ du: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>, _ A: IterationActivations,
                               pool r: Int, N: Int) {
        let c = config.moe, F = c.dFF
        denseScratch.ensure(rows: N, F: F, activation: c.activation)
        ExpertFFN.backward(dx: du, dw: grads.pool(r).expert(0, d: d, F: F), dy: dout, x: A.ffnInput.pointer,
                           h1: A.dense.h1.pointer, h3: A.dense.h3.pointer, act: A.dense.act.pointer,
                           w: params.pool(r).expert(0, d: d, F: F), dact: denseScratch.dact.pointer,
                           dh3: denseScratch.dh3.pointer, n: N, d: d, F: F,
                           activation: c.activation, workers: ctx.blasWorkers)
    }

    private static let chargedInsideMoE: [Phase] = [.experts, .allToAll, .allReduce, .rankWait]

    /// Runs an MoE call, charging its time to routerDispatch less what it charged to experts and communication.
    private func timeMoE(_ body: () -> Void) {
        let timer = ctx.timer
        let inner = Self.chargedInsideMoE
        let before = timer.charged(inner)
        let start = PhaseTimer.now()
        body()
        let elapsed = PhaseTimer.now() - start
        let charged = timer.charged(inner) - before
        timer.add(.routerDispatch, since: PhaseTimer.now() - (elapsed - charged))
    }
}

// The MoE feed-forward layer (SPEC section 3), Megatron-Core's layout: the layer only orchestrates
//
//   route     Router           scores, top-k, gates, global statistics, aux/z losses, capacity  (all-reduce)
//   plan      ExpertSlots      which rank runs each expert (ExpertPlacement: its owner, unless
//                              lending moves it; the count exchange first: countRows)           (all-to-all)
//   dispatch  TokenDispatcher  kept token rows -> the ranks running their experts, expert-major (all-to-all)
//   experts   Experts          one FFN per slot of the plan, on its contiguous rows             (local)
//   combine   TokenDispatcher  outputs back, out[t] = Σ_j g_j · y_j                              (all-to-all)
//
// and backward walks the same steps in reverse, on the forward's plan.
import Kernels
import Configuration
import Collectives

/// What one forward use of the layer saves for its backward.
final class MoEUseState {
    let router: RouterState
    let plan: ExpertSlots
    let dispatch: DispatchState
    let expertInput = FloatBuffer()     // [recvRows, d] the experts' input rows, expert-major
    let ffn = FFNActivations()          // [recvRows, F] the experts' hidden activations, expert-major

    /// Bytes per use (buffer table, see MicroBatchShape).
    static func bufferBytes(_ s: MicroBatchShape) -> Int {
        RouterState.bufferBytes(s) + DispatchState.bufferBytes(s) + 4 * s.expertRows * s.d
            + FFNActivations.bufferBytes(rows: s.expertRows, s)
    }

    init(cfg: MoELayerConfig, dModel: Int, ctx: ParallelContext) {
        router = RouterState(experts: cfg.numExperts)
        plan = ExpertSlots(experts: cfg.numExperts, dModel: dModel, dFF: cfg.dFF, ctx: ctx)
        dispatch = DispatchState(experts: cfg.numExperts, groupSize: ctx.expertGroup.size)
    }
}

final class MoELayer {
    let d: Int
    let router: Router
    let dispatcher: TokenDispatcher
    let experts: Experts
    /// Places the plan's experts: on their owners, or lending moves some from busy ranks to idle ones.
    let placement: ExpertPlacement
    // Backward scratch, expert-major [recvRows, d] each, and [N, k].
    private let dExpertOutputs = FloatBuffer(), dExpertInputs = FloatBuffer(), dGates = FloatBuffer()

    /// Bytes of the layer's scratch, its parts' included (buffer table, see MicroBatchShape).
    static func scratchBytes(_ s: MicroBatchShape) -> Int {
        4 * (2 * s.expertRows * s.d + s.N * s.k) + Router.scratchBytes(s) + TokenDispatcher.scratchBytes(s)
            + FFNBackwardScratch.bufferBytes(rows: s.expertRows, s) + s.placementBytes
            + Experts.packBytes(s)
    }

    init(cfg: MoELayerConfig, dModel: Int, ctx: ParallelContext) {
        d = dModel
        router = Router(cfg: cfg, dModel: dModel, ctx: ctx)
        dispatcher = TokenDispatcher(ctx: ctx, width: dModel, experts: cfg.numExperts, topK: cfg.topK)
        placement = ExpertLending.make(cfg, dModel: dModel, ctx: ctx) ?? OwnerPlacement()   // lending, or owners only
        experts = Experts(cfg: cfg, dModel: dModel, guestSlots: placement.guestSlots, ctx: ctx)
    }

    /// out[N,d] (overwritten) = MoE(u[N,d]) with the pool's weights. `capacityFactor` 0 = dropless.
    /// `auxScale`, `zScale`: the loss weights of this use's aux and z terms (coef / (micro-steps · iterations)).
    /// `replayRouting`: reuse `s`'s previous routing decisions (see `Router.forward`). Collective.
    func forward(_ out: UnsafeMutablePointer<Float>, _ u: UnsafePointer<Float>, pool: PoolTensors, router use: RouterUse,
                 state s: MoEUseState, N: Int, capacityFactor: Double, auxScale: Double, zScale: Double,
                 replayRouting: Bool = false) {
        router.forward(s.router, input: u, use: use, N: N, capacityFactor: capacityFactor,
                       auxScale: auxScale, zScale: zScale, replay: replayRouting)
        let selected = s.router.selected.pointer, keep = s.router.keep.pointer
        dispatcher.countRows(s.dispatch, selected: selected, keep: keep, N: N)
        placement.place(s.plan, rows: dispatcher.expertRows, weights: pool)
        dispatcher.plan(s.dispatch, s.plan, selected: selected, keep: keep)
        let x = s.expertInput.ensure(s.dispatch.recvRows * d)
        dispatcher.dispatch(s.dispatch, tokens: u, into: x)
        experts.forward(dispatcher.expertOutputs(s.dispatch), x, rows: s.dispatch.rowsPerSlot, plan: s.plan, saved: s.ffn)
        dispatcher.combine(s.dispatch, gates: s.router.gates.pointer, into: out, N: N)
    }

    /// du[N,d] += dMoE/du · dout; the pool's weight gradients (`grads`) +=. Collective.
    func backward(_ du: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>, _ u: UnsafePointer<Float>,
                  pool: PoolTensors, grads: PoolTensors, router use: RouterUse, state s: MoEUseState, N: Int) {
        let rows = s.dispatch.recvRows
        let dy = dExpertOutputs.ensure(rows * d), dg = dGates.ensure(N * router.k)
        dispatcher.combineBackward(s.dispatch, dOut: dout, gates: s.router.gates.pointer, dGates: dg, dExpertOutputs: dy, N: N)
        let dx = dExpertInputs.zeroed(rows * d)
        placement.attachGradients(s.plan, weights: pool, grads: grads)
        experts.backward(dx, dy, s.expertInput.pointer, rows: s.dispatch.rowsPerSlot, plan: s.plan, saved: s.ffn)
        placement.finishBackward(s.plan, grads: grads)
        dispatcher.dispatchBackward(s.dispatch, dExpertInputs: dx, into: du)
        router.backward(s.router, dInput: du, dGates: dg, input: u, use: use, N: N)
    }

    /// Starts a model pass (see `Experts`): the weights may have changed since the last one.
    func beginPass() { experts.beginPass() }
}

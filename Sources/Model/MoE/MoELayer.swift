// The MoE feed-forward layer (SPEC section 3), Megatron-Core's layout: the layer only orchestrates
//
//   route     Router           scores, top-k, gates, global statistics, aux/z losses, capacity  (all-reduce)
//   dispatch  TokenDispatcher  kept token rows -> the ranks running their experts, expert-major (all-to-all)
//   lend      ExpertLoans      weights of experts lent to a less busy rank (backward: and gradients)
//   experts   Experts          one FFN per expert this rank runs, on its contiguous rows         (local)
//   combine   TokenDispatcher  outputs back, out[t] = Σ_j g_j · y_j                              (all-to-all)
//
// and backward walks the same steps in reverse (lending the gradients too, and taking them back).
import Kernels
import Configuration
import Collectives

/// What one forward use of the layer saves for its backward.
final class MoEUseState {
    let router: RouterState
    let dispatch: DispatchState
    let expertInput = FloatBuffer()     // [recvRows, d] the experts' input rows, expert-major
    let ffn = FFNActivations()          // [recvRows, F] the experts' hidden activations, expert-major

    /// Bytes per use (buffer table, see MicroBatchShape).
    static func bufferBytes(_ s: MicroBatchShape) -> Int {
        RouterState.bufferBytes(s) + DispatchState.bufferBytes(s) + 4 * s.expertRows * s.d
            + FFNActivations.bufferBytes(rows: s.expertRows, s)
    }

    init(cfg: MoELayerConfig, ctx: ParallelContext) {
        router = RouterState(experts: cfg.numExperts)
        dispatch = DispatchState(experts: cfg.numExperts, groupSize: ctx.expertGroup.size)
    }
}

final class MoELayer {
    let d: Int
    let router: Router
    let dispatcher: TokenDispatcher
    let experts: Experts
    let loans: ExpertLoans
    private let ctx: ParallelContext
    // Backward scratch, expert-major [recvRows, d] each, and [N, k].
    private let dExpertOutputs = FloatBuffer(), dExpertInputs = FloatBuffer(), dGates = FloatBuffer()

    /// Bytes of the layer's scratch, its parts' included (buffer table, see MicroBatchShape).
    static func scratchBytes(_ s: MicroBatchShape) -> Int {
        4 * (2 * s.expertRows * s.d + s.N * s.k) + Router.scratchBytes(s) + TokenDispatcher.scratchBytes(s)
            + FFNBackwardScratch.bufferBytes(rows: s.expertRows, s) + ExpertLoans.scratchBytes(s, maxLoans: s.maxLoans)
            + Experts.packBytes(s)
    }

    init(cfg: MoELayerConfig, dModel: Int, ctx: ParallelContext) {
        d = dModel
        router = Router(cfg: cfg, dModel: dModel, ctx: ctx)
        dispatcher = TokenDispatcher(ctx: ctx, width: dModel, experts: cfg.numExperts, topK: cfg.topK)
        experts = Experts(cfg: cfg, dModel: dModel, ctx: ctx)
        loans = ExpertLoans(dModel: dModel, dFF: cfg.dFF, activation: cfg.activation, ctx: ctx)
        self.ctx = ctx
    }

    /// out[N,d] (overwritten) = MoE(u[N,d]) with the pool's weights. `capacityFactor` 0 = dropless.
    /// `auxScale`, `zScale`: the loss weights of this use's aux and z terms (coef / (micro-steps · iterations)).
    /// `replayRouting`: reuse `s`'s previous routing decisions (see `Router.forward`). Collective.
    func forward(_ out: UnsafeMutablePointer<Float>, _ u: UnsafePointer<Float>, pool: PoolTensors, router use: RouterUse,
                 state s: MoEUseState, N: Int, capacityFactor: Double, auxScale: Double, zScale: Double,
                 replayRouting: Bool = false) {
        router.forward(s.router, input: u, use: use, N: N, capacityFactor: capacityFactor,
                       auxScale: auxScale, zScale: zScale, replay: replayRouting)
        dispatcher.plan(s.dispatch, selected: s.router.selected.pointer, keep: s.router.keep.pointer, N: N)
        let x = s.expertInput.ensure(s.dispatch.recvRows * d)
        dispatcher.dispatch(s.dispatch, tokens: u, into: x)
        let lending = ExpertLoans.anyLoan(s.dispatch.runner, slices: ctx.expertSlices)
        if lending { loans.sendWeights(runner: s.dispatch.runner, pool: pool) }
        let plan = s.dispatch, loans = loans
        experts.forward(dispatcher.expertOutputs(s.dispatch), x, rows: plan.rowsPerSlot, slots: plan.slots,
                        weights: { i in self.slot(i, plan, own: pool) { loans.weights(ofGuest: $0) } },
                        pack: { self.pack(of: $0, plan) }, saved: s.ffn)
        dispatcher.combine(s.dispatch, gates: s.router.gates.pointer, into: out, N: N)
    }

    /// du[N,d] += dMoE/du · dout; the pool's weight gradients (`grads`) +=. Collective.
    func backward(_ du: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>, _ u: UnsafePointer<Float>,
                  pool: PoolTensors, grads: PoolTensors, router use: RouterUse, state s: MoEUseState, N: Int) {
        let rows = s.dispatch.recvRows
        let dy = dExpertOutputs.ensure(rows * d), dg = dGates.ensure(N * router.k)
        dispatcher.combineBackward(s.dispatch, dOut: dout, gates: s.router.gates.pointer, dGates: dg, dExpertOutputs: dy, N: N)
        let dx = dExpertInputs.zeroed(rows * d)
        let plan = s.dispatch, loans = loans
        let lending = ExpertLoans.anyLoan(plan.runner, slices: ctx.expertSlices)
        if lending { loans.sendWeightsAndGradients(runner: plan.runner, pool: pool, grads: grads) }
        experts.backward(dx, dy, s.expertInput.pointer, rows: plan.rowsPerSlot, slots: plan.slots,
                         weights: { i in self.slot(i, plan, own: pool) { loans.weights(ofGuest: $0) } },
                         pack: { self.pack(of: $0, plan) },
                         grads: { i in self.slot(i, plan, own: grads) { loans.gradients(ofGuest: $0) } }, saved: s.ffn)
        if lending { loans.returnGradients(runner: plan.runner, grads: grads) }
        dispatcher.dispatchBackward(s.dispatch, dExpertInputs: dx, into: du)
        router.backward(s.router, dInput: du, dGates: dg, input: u, use: use, N: N)
    }

    /// Starts a model pass (see `Experts`): the weights may have changed since the last one.
    func beginPass() { experts.beginPass() }

    /// Slot i's pack in Experts: its held expert's index in this rank's slice, or L + its loan's index.
    @inline(__always)
    private func pack(of i: Int, _ plan: DispatchState) -> Int {
        let g = plan.slotGuest[i], L = ctx.localExperts
        return g < 0 ? plan.slotExperts[i] - L.lowerBound : L.count + g
    }

    /// Slot i's tensors: from `own` (this rank's pool weights or gradients) for its own expert, else the loan's.
    @inline(__always)
    private func slot(_ i: Int, _ plan: DispatchState, own: PoolTensors, guest: (Int) -> FFNWeights) -> FFNWeights {
        let g = plan.slotGuest[i]
        return g < 0 ? own.expert(plan.slotExperts[i] - ctx.localExperts.lowerBound, d: d, F: experts.F) : guest(g)
    }
}

// The MoE feed-forward layer (SPEC section 3): route -> dispatch -> experts -> combine.
//
// Forward, for N local tokens u[N,d]:
//   1. router logits z = u·router, P = softmax(z), top-k experts and gates (local);
//   2. routing statistics over the global micro-batch: Σ P, Σ lse², N and the
//      per-slot expert counts, one all-reduce over the world (communicates);
//   3. capacity (c > 0): each expert keeps its first C = ceil(c·k·N/E) assignments
//      in the order (slot j, global token index); the per-rank counts come from one
//      more all-reduce (communicates);
//   4. dispatch: kept rows, sorted by expert, go to the expert's owner in the
//      expert group: counts then rows by all-to-all-v (communicates);
//   5. each local expert runs once on all rows it received (one GEMM per weight);
//   6. combine: outputs return by the mirror all-to-all-v and are summed with
//      their gates: out[t] = Σ_j g_j · y_j (communicates).
// Backward mirrors 6 -> 1. Aux and z losses enter the router gradient through
// constants computed from the global statistics, so every rank differentiates
// only its own tokens and the sum over ranks is the gradient of the global loss.
import Kernels
import Configuration
import Collectives

/// Routing statistics of one MoE use over the global micro-batch (identical on every rank).
public struct RoutingStats: Sendable {
    /// Tokens N of the global micro-batch.
    public var tokens: Int = 0
    /// [E] assignments per expert, before drops (all slots).
    public var counts: [Int64] = []
    /// Assignments dropped by the capacity limit.
    public var dropped: Int64 = 0
    /// [E] Σ over tokens of P[t, e].
    public var probSum: [Double] = []
    /// Switch load-balancing loss E · Σ_e f_e · Pbar_e.
    public var aux: Double = 0
    /// Router z-loss: mean over tokens of logsumexp(z)².
    public var z: Double = 0
}

/// The weights of one expert pool (local expert slices) or dense FFN.
struct PoolWeights {
    var router: UnsafeMutablePointer<Float>?   // [d, E]
    var w1: UnsafeMutablePointer<Float>        // [localE, d, F]
    var w3: UnsafeMutablePointer<Float>?       // [localE, d, F]
    var w2: UnsafeMutablePointer<Float>        // [localE, F, d]

    func expert(_ le: Int, d: Int, F: Int) -> FFNWeights {
        FFNWeights(w1: w1 + le * d * F, w3: w3.map { $0 + le * d * F }, w2: w2 + le * F * d)
    }
}

/// What one forward use of the layer saves for its backward.
final class MoEUseState {
    let logits = FloatBuffer(), probs = FloatBuffer(), lse = FloatBuffer()
    let topIndex = Buffer<Int32>(), gates = FloatBuffer()
    /// 1 when assignment t·k+j was kept, 0 when dropped.
    let kept = Buffer<Int32>()
    /// For each sent row (sorted by expert): the assignment t·k+j it carries.
    let rowAssignment = Buffer<Int32>()
    var plan = DispatchPlan()
    let yReturned = FloatBuffer()        // [sendRows, d] expert outputs, in send order
    let x = FloatBuffer(), h1 = FloatBuffer(), h3 = FloatBuffer(), act = FloatBuffer()  // expert-major
    var stats = RoutingStats()
    /// dL/dP[t,e] from the aux loss (same for every token) and the z-loss weight on Σ lse².
    var auxGrad: [Float] = []
    var zGrad: Float = 0
}

final class MoELayer {
    let cfg: MoELayerConfig
    let d: Int
    let ctx: ParallelContext
    let dispatcher: TokenDispatcher
    // Scratch shared by all uses (forward and backward run one use at a time).
    private let sendBuf = FloatBuffer(), yExpert = FloatBuffer()
    private let dy = FloatBuffer(), dact = FloatBuffer(), dh1 = FloatBuffer(), dh3 = FloatBuffer()
    private let dgates = FloatBuffer(), dlogits = FloatBuffer(), replayScratch = Buffer<Int32>()

    init(cfg: MoELayerConfig, dModel: Int, ctx: ParallelContext) {
        self.cfg = cfg; self.d = dModel; self.ctx = ctx
        dispatcher = TokenDispatcher(ctx: ctx, width: dModel)
    }

    private var E: Int { cfg.numExperts }
    private var k: Int { cfg.topK }
    private var F: Int { cfg.dFF }
    private var localE: Int { ctx.localExperts.count }

    // MARK: forward

    /// out[N,d] (overwritten) = MoE(u[N,d]). `capacityFactor` 0 = dropless (always so in evaluation).
    /// `auxScale`, `zScale`: the loss weights of this use's aux and z terms (coef / (micro-steps · iterations)).
    /// `replayRouting`: reuse this state's previous top-k sets, kept mask and statistics (f_e) instead of
    /// deciding anew (gates still follow the router probabilities): the loss is then smooth in the
    /// parameters, for finite-difference checks.
    func forward(_ out: UnsafeMutablePointer<Float>, _ u: UnsafePointer<Float>, pool: PoolWeights, state s: MoEUseState,
                 N: Int, capacityFactor: Double, auxScale: Double, zScale: Double, replayRouting: Bool = false) {
        let E = self.E, k = self.k, d = self.d
        // 1. route (local)
        let logits = s.logits.ensure(N * E), probs = s.probs.ensure(N * E), lse = s.lse.ensure(N)
        let top = s.topIndex.ensure(N * k), gates = s.gates.ensure(N * k)
        if N > 0 {
            matmulForward(logits, u, pool.router!, N, d, E)
            if replayRouting {
                let fresh = replayScratch.ensure(N * k)
                routerForward(probs, lse, fresh, gates, logits, N, E, k, normalize: cfg.normalizeGates)
                replayGates(gates, probs: probs, top: top, N: N)
            } else {
                routerForward(probs, lse, top, gates, logits, N, E, k, normalize: cfg.normalizeGates)
            }
        }

        // 2. global statistics: [Σ P (E) | Σ lse² | N | counts by slot (k·E)]
        var g = [Double](repeating: 0, count: E + 2 + k * E)
        var localSlotCounts = [Int](repeating: 0, count: k * E)
        for t in 0 ..< N {
            let p = probs + t * E
            for e in 0 ..< E { g[e] += Double(p[e]) }
            g[E] += Double(lse[t]) * Double(lse[t])
            for j in 0 ..< k { localSlotCounts[j * E + Int(top[t * k + j])] += 1 }
        }
        g[E + 1] = Double(N)
        for i in 0 ..< k * E { g[E + 2 + i] = Double(localSlotCounts[i]) }
        ctx.timer.measure(.allReduce) { g.withUnsafeMutableBufferPointer { ctx.world.allReduceSum($0) } }
        let Nglob = Int(g[E + 1])
        var slotCounts = [Int](repeating: 0, count: k * E)          // global, [k, E]
        for i in 0 ..< k * E { slotCounts[i] = Int(g[E + 2 + i]) }
        let previous = s.stats
        var st = RoutingStats()
        st.tokens = Nglob
        st.probSum = Array(g[0 ..< E])
        st.counts = replayRouting ? previous.counts
                                  : (0 ..< E).map { e in Int64((0 ..< k).reduce(0) { $0 + slotCounts[$1 * E + e] }) }
        let invN = Nglob > 0 ? 1 / Double(Nglob) : 0
        var aux = 0.0
        var auxGrad = [Float](repeating: 0, count: E)
        for e in 0 ..< E {
            let f = Double(st.counts[e]) * invN / Double(k)
            aux += f * st.probSum[e] * invN
            auxGrad[e] = Float(auxScale * Double(E) * f * invN)
        }
        st.aux = Double(E) * aux
        st.z = g[E] * invN
        s.auxGrad = auxGrad
        s.zGrad = Float(zScale * invN)

        // 3. capacity: which assignments are kept
        let kept = s.kept.ensure(N * k)
        if replayRouting {
            st.dropped = previous.dropped          // keep the previous kept mask
        } else if capacityFactor > 0 {
            let C = Int((capacityFactor * Double(k) * Double(Nglob) / Double(E)).rounded(.up))
            // Per-rank slot counts [W, k, E], gathered by an all-reduce of a buffer with only our row filled.
            let W = ctx.world.size, me = ctx.world.rank
            var perRank = [Int64](repeating: 0, count: W * k * E)
            for i in 0 ..< k * E { perRank[me * k * E + i] = Int64(localSlotCounts[i]) }
            ctx.timer.measure(.allReduce) { perRank.withUnsafeMutableBufferPointer { ctx.world.allReduceSum($0) } }
            // Position of our first slot-j assignment to e in e's keep order (slot, then global token).
            var next = [Int](repeating: 0, count: k * E)
            var dropped = 0
            for j in 0 ..< k {
                for e in 0 ..< E {
                    var base = 0
                    for jj in 0 ..< j { base += slotCounts[jj * E + e] }
                    for r in 0 ..< me { base += Int(perRank[r * k * E + j * E + e]) }
                    next[j * E + e] = base
                    let before = (0 ..< j).reduce(0) { $0 + slotCounts[$1 * E + e] }
                    dropped += max(0, slotCounts[j * E + e] - max(0, C - before))
                }
            }
            for j in 0 ..< k {          // slot-major, then token order
                for t in 0 ..< N {
                    let e = Int(top[t * k + j])
                    kept[t * k + j] = next[j * E + e] < C ? 1 : 0
                    next[j * E + e] += 1
                }
            }
            st.dropped = Int64(dropped)
        } else {
            kept.update(repeating: 1, count: N * k)
        }
        s.stats = st

        // 4. dispatch plan: kept rows sorted by expert (then token, then slot)
        var perExpert = [Int](repeating: 0, count: E)
        for a in 0 ..< N * k where kept[a] != 0 { perExpert[Int(top[a])] += 1 }
        var cursor = [Int](repeating: 0, count: E)
        var acc = 0
        for e in 0 ..< E { cursor[e] = acc; acc += perExpert[e] }
        let sendRows = acc
        let rowOf = s.rowAssignment.ensure(sendRows)
        let send = sendBuf.ensure(sendRows * d)
        for a in 0 ..< N * k where kept[a] != 0 {
            let e = Int(top[a]), row = cursor[e]
            cursor[e] += 1
            rowOf[row] = Int32(a)
            (send + row * d).update(from: u + (a / k) * d, count: d)
        }
        let plan = dispatcher.plan(sendPerExpert: perExpert)
        s.plan = plan
        let recvRows = plan.recvRows
        let x = s.x.ensure(recvRows * d)
        dispatcher.dispatch(send, plan: plan, into: x)

        // 5. experts: one FFN call per local expert on its contiguous rows
        let F = self.F
        let h1 = s.h1.ensure(recvRows * F), act = s.act.ensure(recvRows * F)
        let h3 = s.h3.ensure(cfg.activation == .swiglu ? recvRows * F : 1)
        let y = yExpert.ensure(recvRows * d)
        let tExperts = PhaseTimer.now()
        let (offsets, shares) = expertShares(plan.rowsPerLocalExpert)
        Blas.parallel(workers: shares.count) { w in
            for le in shares[w] {
                let n = plan.rowsPerLocalExpert[le], off = offsets[le]
                ExpertFFN.forward(y: y + off * d, h1: h1 + off * F, h3: cfg.activation == .swiglu ? h3 + off * F : h3,
                                  act: act + off * F, x: x + off * d, w: pool.expert(le, d: d, F: F),
                                  n: n, d: d, F: F, activation: cfg.activation)
            }
        }

        ctx.timer.add(.experts, since: tExperts)
        // 6. return and combine
        let yBack = s.yReturned.ensure(sendRows * d)
        dispatcher.combine(y, plan: plan, into: yBack)
        out.update(repeating: 0, count: N * d)
        for row in 0 ..< sendRows {
            let a = Int(rowOf[row]), t = a / k
            let gte = gates[a]
            let o = out + t * d, yr = yBack + row * d
            for i in 0 ..< d { o[i] += gte * yr[i] }
        }
    }

    /// Row offsets of the local experts' segments, and the experts cut into at most ctx.blasWorkers contiguous
    /// groups of about equal rows: each group runs on its own thread with single-threaded products (experts
    /// touch disjoint rows, hidden buffers and weight-gradient slices, so the result does not depend on the split).
    private func expertShares(_ rows: [Int]) -> (offsets: [Int], shares: [Range<Int>]) {
        var offsets = [Int](repeating: 0, count: rows.count)
        var acc = 0
        for (i, n) in rows.enumerated() { offsets[i] = acc; acc += n }
        let W = max(1, min(ctx.blasWorkers, rows.count))
        if W == 1 || acc == 0 { return (offsets, [0 ..< rows.count]) }
        var shares: [Range<Int>] = []
        var start = 0
        for w in 1 ... W {
            var end = start
            if w == W { end = rows.count } else {
                let target = acc * w / W          // cut where the running row count first reaches w/W of the rows
                while end < rows.count && offsets[end] + rows[end] <= target { end += 1 }
            }
            shares.append(start ..< end)
            start = end
        }
        return (offsets, shares)
    }

    /// Gates of given top-k sets: P[e_j], divided by Σ_j P[e_j] when normalising and k > 1.
    private func replayGates(_ gates: UnsafeMutablePointer<Float>, probs: UnsafePointer<Float>, top: UnsafePointer<Int32>, N: Int) {
        let E = self.E, k = self.k
        for t in 0 ..< N {
            var sum: Float = 0
            for j in 0 ..< k { gates[t * k + j] = probs[t * E + Int(top[t * k + j])]; sum += gates[t * k + j] }
            if cfg.normalizeGates && k > 1 { for j in 0 ..< k { gates[t * k + j] /= sum } }
        }
    }

    // MARK: backward

    /// du[N,d] += dMoE/du · dout; weight gradients (+=) into `grads`.
    func backward(_ du: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>, _ u: UnsafePointer<Float>,
                  pool: PoolWeights, grads: PoolWeights, state s: MoEUseState, N: Int) {
        let E = self.E, k = self.k, d = self.d, F = self.F
        let top = s.topIndex.pointer, gates = s.gates.pointer, rowOf = s.rowAssignment.pointer
        let plan = s.plan
        let sendRows = plan.sendRows, recvRows = plan.recvRows
        let yBack = s.yReturned.pointer

        // 6'. combine: dgate = dout[t]·y, dy = g·dout[t]
        let dg = dgates.zeroed(N * k)
        let dySend = sendBuf.ensure(sendRows * d)
        for row in 0 ..< sendRows {
            let a = Int(rowOf[row]), t = a / k
            let o = dout + t * d, yr = yBack + row * d, dyr = dySend + row * d
            var dot: Float = 0
            let gte = gates[a]
            for i in 0 ..< d { dot += o[i] * yr[i]; dyr[i] = gte * o[i] }
            dg[a] = dot
        }
        // mirror of the combine: dy travels to the experts
        let dyE = dy.ensure(recvRows * d)
        dispatcher.dispatch(dySend, plan: plan, into: dyE)

        // 5'. experts backward (dx expert-major into yExpert scratch)
        let dxE = yExpert.ensure(recvRows * d)
        let dA = dact.ensure(recvRows * F), dH1 = dh1.ensure(recvRows * F)
        let dH3 = dh3.ensure(cfg.activation == .swiglu ? recvRows * F : 1)
        let tExperts = PhaseTimer.now()
        let (offsets, shares) = expertShares(plan.rowsPerLocalExpert)
        Blas.parallel(workers: shares.count) { w in
            for le in shares[w] {
            let n = plan.rowsPerLocalExpert[le], off = offsets[le]
            ExpertFFN.backward(dx: dxE + off * d, dw: grads.expert(le, d: d, F: F), dy: dyE + off * d,
                               x: s.x.pointer + off * d, h1: s.h1.pointer + off * F,
                               h3: cfg.activation == .swiglu ? s.h3.pointer + off * F : s.h3.pointer,
                               act: s.act.pointer + off * F, w: pool.expert(le, d: d, F: F),
                               dact: dA + off * F, dh1: dH1 + off * F,
                               dh3: cfg.activation == .swiglu ? dH3 + off * F : dH3,
                               n: n, d: d, F: F, activation: cfg.activation)
            }
        }
        ctx.timer.add(.experts, since: tExperts)
        // 4'. mirror of the dispatch: dx returns to the tokens' ranks
        let dxBack = sendBuf.ensure(sendRows * d)
        dispatcher.combine(dxE, plan: plan, into: dxBack)
        for row in 0 ..< sendRows {
            let t = Int(rowOf[row]) / k
            let dst = du + t * d, src = dxBack + row * d
            for i in 0 ..< d { dst[i] += src[i] }
        }

        // 1'. router: gates, aux and z terms -> router logits -> u and router weights
        guard N > 0 else { return }
        let dz = dlogits.ensure(N * E)
        s.auxGrad.withUnsafeBufferPointer { ag in
            routerBackward(dz, dg, s.probs.pointer, s.lse.pointer, top, N, E, k, normalize: cfg.normalizeGates,
                           auxGrad: ag.baseAddress, zGrad: s.zGrad)
        }
        matmulBackward(du, grads.router!, dz, u, pool.router!, N, d, E)
    }
}

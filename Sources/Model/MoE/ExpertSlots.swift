// The plan of one MoE use: which rank of the expert group runs each expert, and the table of the experts this
// rank runs (its slots), each with the weights to run it with, the gradient to add its weight gradient into
// and the pack Experts keeps its packed weights in. The dispatcher moves rows by `runner`; Experts runs the
// table. Every expert runs on its owner unless a balancing step of the plan moves it
import Collectives

final class ExpertSlots {
    /// [E] the group rank that runs each expert in this use.
    private(set) var runner: [Int]
    /// The slots: experts this rank runs, in expert order.
    private(set) var count = 0
    /// [count] per slot: its expert, its pack (held expert j: j; the i-th expert run away from its owner: L + i),
    /// its weights, and its weight gradient (set in backward by `attachGradients`).
    private(set) var expert: [Int], pack: [Int]
    private(set) var weights: [FFNWeights?], grads: [FFNWeights?]
    private let ctx: ParallelContext
    private let d: Int, F: Int

    /// Room for any plan: a rank can run every expert of the pool.
    init(experts E: Int, dModel: Int, dFF: Int, ctx: ParallelContext) {
        runner = [Int](repeating: 0, count: E); expert = runner; pack = runner
        weights = [FFNWeights?](repeating: nil, count: E); grads = weights
        self.ctx = ctx; d = dModel; F = dFF
    }

    /// Every expert on its owner, with `pool`'s weights (the whole plan when nothing is balanced).
    func placeOnOwners(weights pool: PoolTensors) {
        let slices = ctx.expertSlices
        for r in 0 ..< slices.count { for e in slices[r] { runner[e] = r } }    // index loops: no allocation
        let L = ctx.localExperts
        count = 0
        for e in L { set(count, expert: e, pack: e - L.lowerBound, weights: pool.expert(e - L.lowerBound, d: d, F: F)) }
    }

    /// Backward: each held expert's gradient is its slice of `grads` (a balancing step then replaces its guests').
    func attachGradients(_ g: PoolTensors) {
        let L = ctx.localExperts
        for i in 0 ..< count where L.contains(expert[i]) { grads[i] = g.expert(expert[i] - L.lowerBound, d: d, F: F) }
    }

    /// Moves experts between ranks: `runner` [E] becomes `moved`, and the slots are rebuilt in expert order,
    /// a guest (an expert this rank runs but does not hold) taking `guest(i)` as the i-th guest's weights.
    func move(to moved: [Int], guest: (Int) -> FFNWeights, pool: PoolTensors) {
        let me = ctx.expertGroup.rank, L = ctx.localExperts
        count = 0
        var guests = 0
        for e in 0 ..< runner.count {
            runner[e] = moved[e]
            guard moved[e] == me else { continue }
            if L.contains(e) {
                set(count, expert: e, pack: e - L.lowerBound, weights: pool.expert(e - L.lowerBound, d: d, F: F))
            } else {
                set(count, expert: e, pack: L.count + guests, weights: guest(guests)); guests += 1
            }
        }
    }

    /// Slot i runs a guest: its weights and gradient are `w` and `g` (backward copies that travelled).
    func setGuest(_ i: Int, weights w: FFNWeights, grads g: FFNWeights) { weights[i] = w; grads[i] = g }

    private func set(_ i: Int, expert e: Int, pack p: Int, weights w: FFNWeights) {
        expert[i] = e; pack[i] = p; weights[i] = w; grads[i] = nil
        count = i + 1
    }
}

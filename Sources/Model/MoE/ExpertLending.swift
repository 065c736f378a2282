// Expert lending: balancing the experts' work across the ranks of an expert group, use by use.
//
// Routing is rarely even: in the seed shape's first steps one rank of two received up to 3/4 of the rows,
// and the other waited for it at the combine (15-20% of the step at -np 2). Ownership stays fixed (the
// checkpoint layout, the optimizer state), but which rank *runs* an expert is decided anew in each MoE
// use, after the count exchange, from the rows every expert received over the whole group:
//
//   plan    the busiest rank lends its experts, one at a time, to the least busy rank while that lowers
//           the larger of the two loads, counting the transfer (`transferRows` rows' worth of time, on both
//           ranks: the exchange is synchronous); at most `maxLoans` loans per use. Integer arithmetic on
//           the same counts: every rank derives the same plan.
//   forward the owner sends the expert's weights; the helper runs it on the rows routed to it.
//   backward the owner sends the weights and the expert's gradient so far (moving it: the owner's slice
//           restarts from zero); the helper adds this use's gradient into it with the same products the
//           owner would run, and sends it back; the owner adds it into its slice.
//
// Lending is an ExpertPlacement, the step of the MoE layer's plan (ExpertSlots) that places experts: after the
// count exchange it places every expert on its owner, then moves experts between ranks and points the slots of
// the guests (experts lent to this rank) at the copies that travelled.
//
// So lending changes no bit of any result when each expert's products run on one thread (a rank has at
// least as many experts with rows as threads, the usual case): a token's rows are combined in expert order
// whoever ran them, and the gradient accumulates in the same order with the same kernels. FasterMoE's
// "shadowing" (PPoPP '22) replicates a hot expert's weights on every worker and reduces its gradient; this
// is the one-helper form of it, which keeps the gradient exact.
//
// Removing lending: this file, the `ExpertLending.make(...) ??` of MoELayer.init, MicroBatchShape's
// `bufferTerms` line (0 guests, 0 bytes), ParallelContext's policy and counter, bench's lending figures and
// the `parallel.balance_experts` key.
import Collectives
import Configuration

/// When and how much to lend (`parallel.balance_experts`; tests force loans with `transferRows` 0).
/// The same on every rank of an expert group (ParallelContext.make agrees on `threads`): each derives the plan.
public struct ExpertLendingPolicy: Equatable, Sendable {
    /// Lend at all.
    public var enabled: Bool
    /// The cost of one loan, in expert rows, paid by the owner and the helper alike (the exchange is
    /// synchronous): moving an expert's weights twice and its gradient twice, 16 bytes per weight, plus the
    /// staging copies. That takes about as long as running (rank GFLOP/s) · 16 / 6 / (transfer GB/s) rows
    /// through the expert forward and backward, whatever d and F are. Measured on the seed shape at -np 2 (one
    /// thread per rank): ~10 ms per loan against ~115 µs per row, so 96 rows per thread of the rank.
    public var transferRows: Int
    /// Loans per MoE use in an expert group (bounds the helpers' buffers: see `ExpertLending.bufferTerms`).
    public var maxLoans: Int
    /// The most BLAS threads a rank of the group runs experts on. With more than one, a rank that holds fewer
    /// experts with rows than threads splits each product over its threads, which can round differently; so
    /// a loan is made only if the owner and the helper keep at least this many experts with rows, both with
    /// and without the loan (every expert then runs on one thread either way, and nothing changes).
    public var threads: Int

    public static let off = ExpertLendingPolicy(enabled: false, transferRows: 0, maxLoans: 0)
    /// The default: lend when it pays, at most 4 experts per use.
    public static func automatic(threads: Int) -> ExpertLendingPolicy {
        ExpertLendingPolicy(enabled: true, transferRows: 96 * max(threads, 1), maxLoans: 4, threads: threads)
    }
    public init(enabled: Bool, transferRows: Int, maxLoans: Int, threads: Int = 1) {
        self.enabled = enabled; self.transferRows = transferRows; self.maxLoans = maxLoans
        self.threads = max(threads, 1)
    }
    /// The policy `config` asks for (`parallel.balance_experts`) with ranks of `threads` BLAS threads.
    public init(config: RunConfig, threads: Int) {
        self = config.parallel.balanceExperts && !config.moe.isDense ? .automatic(threads: threads) : .off
    }

    /// The most experts a rank of a group of `G` runs beyond the ones it holds in one use (0: lending never runs).
    public func loanSlots(groupSize G: Int) -> Int { enabled && G > 1 ? maxLoans : 0 }
}

/// What lending did on this rank's expert group so far (read by `bench` and the tests).
public final class LendingCounter: @unchecked Sendable {
    /// MoE uses planned (each forward; its backward reuses the plan), uses with a loan, experts lent.
    public internal(set) var uses = 0, usesWithLoans = 0, loans = 0
    /// Rows run by a helper instead of the owner, and all expert rows of the group.
    public internal(set) var rowsLent = 0, rows = 0
    public init() {}
}

/// Computes lending plans for one expert group into preallocated arrays (one per dispatcher).
public final class LendingPlanner {
    let slices: [Range<Int>]
    private var load: [Int], ownBusy: [Int], busyNow: [Int], lent: [Bool]

    public init(slices: [Range<Int>], experts E: Int) {
        self.slices = slices
        load = [Int](repeating: 0, count: slices.count); ownBusy = load; busyNow = load
        lent = [Bool](repeating: false, count: E)
    }

    /// runner[e] = the group rank that runs expert e: its owner (the rank whose slice holds it) unless lent.
    /// `rows[e]`: the rows expert e received over the whole group in this use. Deterministic (ties go to the
    /// lowest rank and expert index), so every rank computes the same plan from the same counts.
    public func plan(rows: [Int], policy: ExpertLendingPolicy, into runner: inout [Int]) {
        let G = slices.count
        for r in 0 ..< G {
            load[r] = 0; ownBusy[r] = 0
            var e = slices[r].lowerBound
            while e < slices[r].upperBound {
                runner[e] = r; lent[e] = false; load[r] += rows[e]
                if rows[e] > 0 { ownBusy[r] += 1 }
                e += 1
            }
            busyNow[r] = ownBusy[r]
        }
        guard policy.enabled && G > 1 else { return }
        for _ in 0 ..< policy.maxLoans {
            var busy = 0, idle = 0
            for r in 1 ..< G {
                if load[r] > load[busy] { busy = r }
                if load[r] < load[idle] { idle = r }
            }
            if busy == idle { break }    // all loads equal
            // With several threads per rank, keep both ranks at least one expert with rows per thread (see
            // `ExpertLendingPolicy.threads`).
            if policy.threads > 1 && (min(busyNow[busy] - 1, ownBusy[busy], ownBusy[idle]) < policy.threads) { break }
            // The owned expert of `busy` that, moved to `idle`, leaves the smaller of the two maxima.
            var best = -1, bestMax = load[busy]
            var e = slices[busy].lowerBound
            while e < slices[busy].upperBound {
                if !lent[e] && rows[e] > 0 {
                    let after = max(load[busy] - rows[e], load[idle] + rows[e]) + policy.transferRows
                    if after < bestMax { best = e; bestMax = after }
                }
                e += 1
            }
            if best < 0 { break }
            runner[best] = idle; lent[best] = true
            load[busy] += policy.transferRows - rows[best]; load[idle] += rows[best] + policy.transferRows
            busyNow[busy] -= 1; busyNow[idle] += 1
        }
    }
}

/// One MoE layer's lending: plans each use's loans and moves the lent experts' weights (backward: and
/// gradients) between the ranks of the expert group. Scratch, one use at a time. Layout of a loan's block:
/// w1 [d,F], w3 [d,F] (swiglu), w2 [F,d]; backward, the expert's gradient follows its weights.
final class ExpertLending: ExpertPlacement {
    let d: Int, F: Int, mats: Int
    let ctx: ParallelContext
    private let planner: LendingPlanner
    private var planned: [Int]    // [E] the runner of each expert in the current use
    /// Floats of one expert's weights (or gradient).
    var expertFloats: Int { d * F * mats }
    /// The most guests a rank runs in one use.
    var guestSlots: Int { ctx.expertLending.maxLoans }
    /// What this rank received: the guests' weights (forward), or per guest weights then gradient (backward).
    private let inbox = FloatBuffer()
    /// What this rank sends: its lent experts' weights (and gradients), or its guests' gradients back.
    private let outbox = FloatBuffer()
    /// The guests (experts lent to this rank) of the current use, in expert order.
    private var guests: [Int] = []
    private var guestBlock = 0     // floats per guest in the inbox: expertFloats (forward) or twice (backward)
    /// This rank's experts lent in the current use, in expert order; the exchange's counts per group rank.
    private var lentOut: [Int] = [], sendCounts: [Int], recvCounts: [Int]

    /// The lending of an MoE layer on `ctx`, nil where nothing can be lent (off, or one rank per group).
    static func make(_ cfg: MoELayerConfig, dModel: Int, ctx: ParallelContext) -> ExpertPlacement? {
        ctx.expertLending.loanSlots(groupSize: ctx.expertGroup.size) == 0 ? nil
            : ExpertLending(experts: cfg.numExperts, dModel: dModel, dFF: cfg.dFF, activation: cfg.activation, ctx: ctx)
    }

    /// Lending's terms of the buffer tables (MicroBatchShape) for `c` with expert groups of `G`: the guest
    /// slots (the most loans a use makes: Experts keeps a pack for each), and the bytes of the buffers at that
    /// many loans, an inbox and an outbox of weights-and-gradient blocks each (d·F·mats floats per matrix set).
    static func bufferTerms(_ c: RunConfig, groupSize G: Int, d: Int, F: Int, mats: Int) -> (guestSlots: Int, scratchBytes: Int) {
        let loans = ExpertLendingPolicy(config: c, threads: 1).loanSlots(groupSize: G)
        return (loans, 4 * 2 * (2 * loans * d * F * mats))
    }

    private init(experts E: Int, dModel: Int, dFF: Int, activation: Activation, ctx: ParallelContext) {
        d = dModel; F = dFF; mats = activation == .swiglu ? 3 : 2; self.ctx = ctx
        planner = LendingPlanner(slices: ctx.expertSlices, experts: E)
        planned = [Int](repeating: 0, count: E)
        sendCounts = [Int](repeating: 0, count: ctx.expertGroup.size); recvCounts = sendCounts
        guests.reserveCapacity(ctx.expertLending.maxLoans); lentOut.reserveCapacity(ctx.expertLending.maxLoans)
    }

    /// Forward: places every expert on its owner, plans this use's loans from the group's rows per expert
    /// (`rows` [E]), counts them, and sends the lent experts' weights to their helpers; `plan` then runs them
    /// there (collective over the group).
    func place(_ plan: ExpertSlots, rows: [Int], weights pool: PoolTensors) {
        plan.placeOnOwners(weights: pool)
        planner.plan(rows: rows, policy: ctx.expertLending, into: &planned)
        count(rows: rows)
        guard anyLoan(planned) else { return }
        exchange(runner: planned, withGradients: false, pool: pool, grads: nil)
        plan.move(to: planned, guest: { block(inbox.pointer + $0 * guestBlock) }, pool: pool)
    }

    /// Backward, before the experts run: held experts' slots take their slices of `grads`; owners move their
    /// lent experts' weights and gradients so far to the helpers (the owner's slice restarts from zero), and
    /// the guests' slots take the copies (collective).
    func attachGradients(_ plan: ExpertSlots, weights pool: PoolTensors, grads: PoolTensors) {
        plan.attachGradients(grads)
        guard anyLoan(plan.runner) else { return }
        exchange(runner: plan.runner, withGradients: true, pool: pool, grads: grads)
        for j in 0 ..< lentOut.count { zero(grads.expert(lentOut[j] - ctx.localExperts.lowerBound, d: d, F: F)) }
        var guest = 0
        for i in 0 ..< plan.count where !ctx.localExperts.contains(plan.expert[i]) {
            let p = inbox.pointer + guest * guestBlock
            plan.setGuest(i, weights: block(p), grads: block(p + expertFloats)); guest += 1
        }
    }

    /// Backward, after the experts ran: helpers send the guests' gradients back; owners add them into their
    /// slices (collective over the group).
    func finishBackward(_ plan: ExpertSlots, grads: PoolTensors) {
        let runner = plan.runner
        guard anyLoan(runner) else { return }
        let G = ctx.expertGroup.size, n = expertFloats
        makeRoom()
        for r in 0 ..< G { sendCounts[r] = 0; recvCounts[r] = 0 }
        let out = outbox.pointer, back = inbox.pointer
        ctx.timer.measure(.allToAll) {
            for i in 0 ..< guests.count { (out + i * n).update(from: inbox.pointer + i * guestBlock + n, count: n) }
        }
        for r in 0 ..< G where r != ctx.expertGroup.rank {
            for e in ctx.expertSlices[r] where runner[e] == ctx.expertGroup.rank { sendCounts[r] += n }
        }
        for j in 0 ..< lentOut.count { recvCounts[runner[lentOut[j]]] += n }
        ctx.timer.collective(.allToAll, over: ctx.expertGroup) {
            ctx.expertGroup.allToAllV(send: UnsafeBufferPointer(start: out, count: guests.count * n), sendCounts: sendCounts,
                                      recv: UnsafeMutableBufferPointer(start: back, count: lentOut.count * n),
                                      recvCounts: recvCounts)
        }
        // Blocks arrive by helper rank, then expert.
        ctx.timer.measure(.allToAll) {
            var at = 0
            for helper in 0 ..< G { for j in 0 ..< lentOut.count where runner[lentOut[j]] == helper {
                add(back + at, into: grads.expert(lentOut[j] - ctx.localExperts.lowerBound, d: d, F: F)); at += n
            } }
        }
    }

    // MARK: -

    /// Any expert of this plan runs away from its owner (index loops: nothing allocates in the step).
    private func anyLoan(_ runner: [Int]) -> Bool {
        let slices = ctx.expertSlices
        for r in 0 ..< slices.count {
            var e = slices[r].lowerBound
            while e < slices[r].upperBound { if runner[e] != r { return true }; e += 1 }
        }
        return false
    }

    /// Adds the plan of a forward use to `ctx.lendingCounter` (the backward reuses it and is not counted).
    private func count(rows: [Int]) {
        let c = ctx.lendingCounter
        var lent = 0, moved = 0, all = 0
        let slices = ctx.expertSlices
        for r in 0 ..< slices.count {
            for e in slices[r] {
                all += rows[e]
                if planned[e] != r { lent += 1; moved += rows[e] }
            }
        }
        c.uses += 1; c.loans += lent; c.rowsLent += moved; c.rows += all
        if lent > 0 { c.usesWithLoans += 1 }
    }

    /// Both buffers at their largest at once (a loan's weights and gradient for `maxLoans` loans), so that
    /// growing never overshoots what the memory estimate counts.
    private func makeRoom() {
        let floats = max(1, 2 * ctx.expertLending.maxLoans * expertFloats)
        inbox.ensure(floats); outbox.ensure(floats)
    }

    private func exchange(runner: [Int], withGradients: Bool, pool: PoolTensors, grads: PoolTensors?) {
        let me = ctx.expertGroup.rank, G = ctx.expertGroup.size, n = expertFloats
        let block = withGradients ? 2 * n : n
        let local = ctx.localExperts
        makeRoom()
        for r in 0 ..< G { sendCounts[r] = 0; recvCounts[r] = 0 }
        // Sends: this rank's lent experts, by helper rank, then expert.
        lentOut.removeAll(keepingCapacity: true)
        for e in local where runner[e] != me { lentOut.append(e) }
        let out = outbox.pointer
        ctx.timer.measure(.allToAll) {
            var at = 0
            for helper in 0 ..< G { for j in 0 ..< lentOut.count where runner[lentOut[j]] == helper {
                let le = lentOut[j] - local.lowerBound
                copyOut(pool.expert(le, d: d, F: F), to: out + at)
                if let g = grads { copyOut(g.expert(le, d: d, F: F), to: out + at + n) }
                at += block
            } }
        }
        for j in 0 ..< lentOut.count { sendCounts[runner[lentOut[j]]] += block }    // index loops: no allocation
        // Receives: the experts lent to this rank, by owner rank, then expert (= expert order).
        guests.removeAll(keepingCapacity: true)
        for r in 0 ..< G where r != me {
            for e in ctx.expertSlices[r] where runner[e] == me { guests.append(e); recvCounts[r] += block }
        }
        guestBlock = block
        let inb = inbox.pointer
        ctx.timer.collective(.allToAll, over: ctx.expertGroup) {
            ctx.expertGroup.allToAllV(send: UnsafeBufferPointer(start: out, count: lentOut.count * block), sendCounts: sendCounts,
                                      recv: UnsafeMutableBufferPointer(start: inb, count: guests.count * block),
                                      recvCounts: recvCounts)
        }
    }

    private func block(_ p: UnsafeMutablePointer<Float>) -> FFNWeights {
        FFNWeights(w1: p, w3: mats == 3 ? p + d * F : nil, w2: p + (mats - 1) * d * F)
    }

    private func copyOut(_ w: FFNWeights, to p: UnsafeMutablePointer<Float>) {
        let b = block(p)
        b.w1.update(from: w.w1, count: d * F)
        if let w3 = w.w3 { b.w3!.update(from: w3, count: d * F) }
        b.w2.update(from: w.w2, count: F * d)
    }

    private func zero(_ w: FFNWeights) {
        w.w1.update(repeating: 0, count: d * F)
        w.w3?.update(repeating: 0, count: d * F)
        w.w2.update(repeating: 0, count: F * d)
    }

    /// w += the block at p, matrix by matrix.
    private func add(_ p: UnsafeMutablePointer<Float>, into w: FFNWeights) {
        let b = block(p)
        func add(_ src: UnsafeMutablePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
            for i in 0 ..< n { dst[i] += src[i] }
        }
        add(b.w1, w.w1, d * F)
        if let w3 = w.w3 { add(b.w3!, w3, d * F) }
        add(b.w2, w.w2, F * d)
    }
}

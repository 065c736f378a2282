// The token dispatcher of an MoE layer: moves each kept assignment's token row to the rank that runs its
// expert (the use's plan, ExpertSlots), and the expert's output back, weighted by the gate (Megatron-Core's
// permute -> all-to-all -> unpermute). It only moves rows: which rank runs which expert is the plan's.
//
//   countRows  one count exchange tells every rank of the group what every rank sends to every expert, and
//              so the rows of every expert over the group (what a plan may balance); communicates
//   plan       the row order for the use's plan: this rank's kept assignments sorted by the rank running
//              their expert, then expert, token, slot; and what this rank receives from whom
//   dispatch   token rows -> row order -> all-to-all -> [source][slot] -> expert-major, so the rows of
//              every expert this rank runs (its slots) are contiguous (one GEMM per expert); communicates
//   combine    expert-major outputs -> [source][slot] -> all-to-all -> row order, then
//              out[t] = Σ_j g_j · y_(t,j) over the token's experts in expert order, whoever ran them
//              (gates applied here); communicates
//   backward   combineBackward (dgates, gated dy to the experts) and dispatchBackward (dx back to the
//              tokens) mirror them; communicates
//
// With a one-rank expert group (expert_parallel = 1, or one rank) the row order already is expert-major:
// the direct path gathers token rows straight into the experts' input and combines straight from their
// output, with no exchange and no staging copies.
//
// The row loops run on the rank's threads: gathers and the gates' gradient split the rows; combine and
// dispatchBackward, which add several rows into one token, split the tokens and add each token's rows in
// expert order, as one thread does, so the result depends neither on the threads nor on the plan.
import Collectives
import Kernels

/// How one MoE use's rows travel, and the expert outputs back at this rank; filled by `TokenDispatcher.plan`,
/// reused use after use (no allocation once sizes have settled).
final class DispatchState {
    /// [E] kept rows this rank sends to each expert.
    var sendPerExpert: [Int]
    /// The plan's slots (the experts this rank runs in this use, in expert order).
    var slots = 0
    /// [G, slots] rows this rank receives from each group rank for each slot (stride `slots`).
    var recvPerSourceSlot: [Int]
    /// [slots] rows per slot after dispatch (the expert-major segments).
    var rowsPerSlot: [Int]
    /// [G] floats sent to each group rank (the rows of the experts it runs) and received from each.
    var sendFloats: [Int], recvFloats: [Int]
    /// [G, slots] first row of each (source, slot) block in [source][slot] order and in expert-major order.
    var sourceOffsets: [Int], expertOffsets: [Int]
    var sendRows = 0, recvRows = 0
    /// Tokens N of the use (assignmentRow holds N·k).
    var tokens = 0
    /// [sendRows] the assignment t·k+j each row carries, in row order.
    let rowAssignment = Buffer<Int32>()
    /// [N, k] the row of each assignment, −1 if dropped (the inverse of rowAssignment).
    let assignmentRow = Buffer<Int32>()
    /// [N, k] the expert of each kept assignment, −1 if dropped: the order a token's rows are added in.
    let assignmentExpert = Buffer<Int32>()
    /// [sendRows, d] expert outputs back at this rank, in row order (saved for the gates' gradient).
    let returned = FloatBuffer()

    /// Bytes per use of the row buffers (buffer table, see MicroBatchShape; the count arrays are left out).
    static func bufferBytes(_ s: MicroBatchShape) -> Int { s.dense ? 0 : 4 * (s.sentRows + 2 * s.N * s.k + s.sentRows * s.d) }

    /// Room for any plan: a rank can run every expert of the pool.
    init(experts E: Int, groupSize G: Int) {
        sendPerExpert = [Int](repeating: 0, count: E)
        rowsPerSlot = sendPerExpert
        recvPerSourceSlot = [Int](repeating: 0, count: G * E)
        sendFloats = [Int](repeating: 0, count: G); recvFloats = sendFloats
        sourceOffsets = recvPerSourceSlot; expertOffsets = recvPerSourceSlot
    }
}

final class TokenDispatcher {
    let ctx: ParallelContext
    /// Floats per row (d).
    let width: Int
    let E: Int, k: Int
    /// The expert group is this rank alone: no exchange, no staging.
    let isDirect: Bool
    // Scratch of the exchanging path (one use at a time), named by the order their rows are in.
    private let sendOrder = FloatBuffer()      // [sendRows, d] rows in this rank's row order
    private let sourceMajor = FloatBuffer()    // [recvRows, d] rows as the all-to-all delivers them
    private let expertOutputScratch = FloatBuffer()   // [recvRows, d] expert outputs before they travel back
    private var cursor: [Int]                  // [E]
    // The count exchange: this rank's [E] counts to every group rank, everyone's [G, E] back.
    private let countsOut = Buffer<Int64>(), countsIn = Buffer<Int64>()
    private let countsPerRank: [Int]
    /// [E] rows per expert over the group in the current use (after `countRows`: what a plan balances).
    private(set) var expertRows: [Int]

    /// Bytes of the scratch buffers (buffer table, see MicroBatchShape): the Int64 counts, and the exchanging
    /// path's staged rows (none when direct).
    static func scratchBytes(_ s: MicroBatchShape) -> Int {
        8 * 2 * s.G * s.E + (s.G == 1 ? 0 : 4 * (s.sentRows * s.d + 2 * s.expertRows * s.d))
    }

    init(ctx: ParallelContext, width: Int, experts E: Int, topK k: Int) {
        self.ctx = ctx; self.width = width; self.E = E; self.k = k
        isDirect = ctx.expertGroup.size == 1
        cursor = [Int](repeating: 0, count: E)
        expertRows = cursor
        countsOut.ensure(ctx.expertGroup.size * E); countsIn.ensure(ctx.expertGroup.size * E)
        countsPerRank = [Int](repeating: E, count: ctx.expertGroup.size)
    }

    private var G: Int { ctx.expertGroup.size }

    /// Counts the kept assignments (selected [N,k], keep [N,k]) this rank sends to each expert, and the rows of
    /// every expert over the group (`expertRows`; communicates unless direct).
    func countRows(_ s: DispatchState, selected: UnsafePointer<Int32>, keep: UnsafePointer<Int32>, N: Int) {
        for e in 0 ..< E { s.sendPerExpert[e] = 0 }
        for a in 0 ..< N * k where keep[a] != 0 { s.sendPerExpert[Int(selected[a])] += 1 }
        s.tokens = N
        guard !isDirect else {
            for e in 0 ..< E { expertRows[e] = s.sendPerExpert[e] }
            return
        }
        for r in 0 ..< G { for e in 0 ..< E { countsOut.pointer[r * E + e] = Int64(s.sendPerExpert[e]) } }
        ctx.timer.collective(.allToAll, over: ctx.expertGroup) {
            ctx.expertGroup.allToAllV(send: UnsafeBufferPointer(start: countsOut.pointer, count: G * E), sendCounts: countsPerRank,
                                      recv: UnsafeMutableBufferPointer(start: countsIn.pointer, count: G * E),
                                      recvCounts: countsPerRank)
        }
        let counts = countsIn.pointer    // [G, E]: what each group rank sends to each expert
        for e in 0 ..< E { expertRows[e] = 0 }
        for r in 0 ..< G { for e in 0 ..< E { expertRows[e] += Int(counts[r * E + e]) } }
    }

    /// The row order of the kept assignments counted by `countRows` for the use's `plan`, and the rows this
    /// rank receives from every group rank for each of its slots.
    func plan(_ s: DispatchState, _ plan: ExpertSlots, selected: UnsafePointer<Int32>, keep: UnsafePointer<Int32>) {
        let N = s.tokens
        receiveCounts(s, plan)
        // Rows by the rank running their expert, then expert (then token, slot): each rank's rows contiguous.
        var acc = 0
        for r in 0 ..< G {
            let first = acc
            for e in 0 ..< E where plan.runner[e] == r { cursor[e] = acc; acc += s.sendPerExpert[e] }
            s.sendFloats[r] = (acc - first) * width
        }
        s.sendRows = acc
        if isDirect { s.recvRows = acc }
        let rowOf = s.rowAssignment.ensure(acc), rowFor = s.assignmentRow.ensure(N * k)
        let expertOf = s.assignmentExpert.ensure(N * k)
        for a in 0 ..< N * k {
            guard keep[a] != 0 else { rowFor[a] = -1; expertOf[a] = -1; continue }
            let e = Int(selected[a])
            rowOf[cursor[e]] = Int32(a)
            rowFor[a] = Int32(cursor[e])
            expertOf[a] = selected[a]
            cursor[e] += 1
        }
    }

    /// What this rank receives for each slot of `plan`, from the counts of `countRows`.
    private func receiveCounts(_ s: DispatchState, _ plan: ExpertSlots) {
        let L = plan.count
        s.slots = L
        if isDirect {
            for i in 0 ..< L { s.recvPerSourceSlot[i] = s.sendPerExpert[plan.expert[i]]; s.rowsPerSlot[i] = s.recvPerSourceSlot[i] }
            return
        }
        let counts = countsIn.pointer    // [G, E]
        s.recvRows = 0
        for i in 0 ..< L { s.rowsPerSlot[i] = 0 }
        for r in 0 ..< G {
            var received = 0
            for i in 0 ..< L {
                let n = Int(counts[r * E + plan.expert[i]])
                s.recvPerSourceSlot[r * L + i] = n
                received += n; s.rowsPerSlot[i] += n
            }
            s.recvFloats[r] = received * width
            s.recvRows += received
        }
        var acc = 0
        for r in 0 ..< G { for i in 0 ..< L { s.sourceOffsets[r * L + i] = acc; acc += s.recvPerSourceSlot[r * L + i] } }
        acc = 0
        for i in 0 ..< L { for r in 0 ..< G { s.expertOffsets[r * L + i] = acc; acc += s.recvPerSourceSlot[r * L + i] } }
    }

    // MARK: forward

    /// x [recvRows, d] (expert-major) = the token rows u [N, d] of every rank's kept assignments to this rank's
    /// experts (communicates unless direct).
    func dispatch(_ s: DispatchState, tokens u: UnsafePointer<Float>, into x: UnsafeMutablePointer<Float>) {
        let rows = isDirect ? x : sendOrder.ensure(s.sendRows * width)
        let rowOf = s.rowAssignment.pointer, width = width, k = k
        forShares(of: s.sendRows) { range in
            for row in range { (rows + row * width).update(from: u + (Int(rowOf[row]) / k) * width, count: width) }
        }
        if !isDirect { exchange(rows, into: x, s, toExperts: true) }
    }

    /// Where the experts write their outputs [recvRows, d]: with a direct path the rows `combine` reads,
    /// otherwise a scratch that `combine` sends back.
    func expertOutputs(_ s: DispatchState) -> UnsafeMutablePointer<Float> {
        isDirect ? s.returned.ensure(s.sendRows * width) : expertOutputScratch.ensure(s.recvRows * width)
    }

    /// out[N, d] = Σ_j gates[t·k+j] · y_(t,j) over token t's kept assignments (overwritten), the expert outputs
    /// having been written to `expertOutputs(s)` (communicates unless direct).
    func combine(_ s: DispatchState, gates: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, N: Int) {
        let back = s.returned.ensure(s.sendRows * width)
        if !isDirect { exchange(expertOutputScratch.pointer, into: back, s, toExperts: false) }
        let width = width
        forShares(of: N) { tokens in
            for t in tokens {
                let o = out + t * width
                o.update(repeating: 0, count: width)
                forEachRow(of: t, s) { a, row in
                    let g = gates[a], y = back + row * width
                    for i in 0 ..< width { o[i] += g * y[i] }
                }
            }
        }
    }

    // MARK: backward

    /// From dout [N, d]: dgates [N, k] (overwritten; 0 for dropped assignments) = dout[t]·y_(t,j), and
    /// dy [recvRows, d] (expert-major, overwritten) = g · dout[t] at the experts (communicates unless direct).
    func combineBackward(_ s: DispatchState, dOut dout: UnsafePointer<Float>, gates: UnsafePointer<Float>,
                         dGates dg: UnsafeMutablePointer<Float>, dExpertOutputs dy: UnsafeMutablePointer<Float>, N: Int) {
        dg.update(repeating: 0, count: N * k)
        let rows = isDirect ? dy : sendOrder.ensure(s.sendRows * width)
        let rowOf = s.rowAssignment.pointer, back = s.returned.pointer, width = width, k = k
        forShares(of: s.sendRows) { range in
            for row in range {
                let a = Int(rowOf[row]), g = gates[a]
                let o = dout + (a / k) * width, y = back + row * width, dyr = rows + row * width
                for i in 0 ..< width { dyr[i] = g * o[i] }
                dg[a] = dotProduct(o, y, width)
            }
        }
        if !isDirect { exchange(rows, into: dy, s, toExperts: true) }
    }

    /// du [N, d] += the experts' input gradient dx [recvRows, d] (expert-major), summed over each token's
    /// kept assignments (communicates unless direct).
    func dispatchBackward(_ s: DispatchState, dExpertInputs dx: UnsafeMutablePointer<Float>,
                          into du: UnsafeMutablePointer<Float>) {
        var rows = UnsafePointer(dx)
        if !isDirect {
            let back = sendOrder.ensure(s.sendRows * width)
            exchange(dx, into: back, s, toExperts: false)
            rows = UnsafePointer(back)
        }
        let width = width, N = s.tokens
        forShares(of: N) { tokens in
            for t in tokens {
                let dst = du + t * width
                forEachRow(of: t, s) { _, row in
                    let src = rows + row * width
                    for i in 0 ..< width { dst[i] += src[i] }
                }
            }
        }
    }

    // MARK: the rank's threads

    /// body(range) on contiguous shares of 0 ..< n rows over the rank's threads (on the caller when small).
    @inline(__always)
    private func forShares(of n: Int, _ body: (Range<Int>) -> Void) {
        Blas.forEachShare(of: n, width: width, workers: ctx.blasWorkers, body)
    }

    /// body(assignment, row) for token t's kept assignments in expert order: the row order when every expert
    /// runs on its owner, and the same order whichever rank ran each expert, so the plan changes no sum (k is small, so a
    /// selection by smallest expert; a token's experts are distinct).
    @inline(__always)
    private func forEachRow(of t: Int, _ s: DispatchState, _ body: (Int, Int) -> Void) {
        let expertOf = s.assignmentExpert.pointer + t * k, rowFor = s.assignmentRow.pointer + t * k
        var last: Int32 = -1
        while true {
            var next = Int32.max, slot = -1
            for j in 0 ..< k where expertOf[j] > last && expertOf[j] < next { next = expertOf[j]; slot = j }
            if slot < 0 { return }
            body(t * k + slot, Int(rowFor[slot]))
            last = next
        }
    }

    // MARK: the exchange

    /// toExperts: row order [sendRows] -> all-to-all -> expert-major [recvRows]; else the mirror (communicates).
    private func exchange(_ src: UnsafeMutablePointer<Float>, into dst: UnsafeMutablePointer<Float>, _ s: DispatchState,
                          toExperts: Bool) {
        let staged = sourceMajor.ensure(s.recvRows * width)
        if toExperts {
            ctx.timer.collective(.allToAll, over: ctx.expertGroup) {
                ctx.expertGroup.allToAllV(send: UnsafeBufferPointer(start: src, count: s.sendRows * width), sendCounts: s.sendFloats,
                                          recv: UnsafeMutableBufferPointer(start: staged, count: s.recvRows * width),
                                          recvCounts: s.recvFloats)
            }
            permute(staged, to: dst, s, toExpertMajor: true)
        } else {
            permute(src, to: staged, s, toExpertMajor: false)
            ctx.timer.collective(.allToAll, over: ctx.expertGroup) {
                ctx.expertGroup.allToAllV(send: UnsafeBufferPointer(start: staged, count: s.recvRows * width),
                                          sendCounts: s.recvFloats,
                                          recv: UnsafeMutableBufferPointer(start: dst, count: s.sendRows * width),
                                          recvCounts: s.sendFloats)
            }
        }
    }

    /// Reorders blocks of rows between [source][slot] and [slot][source] order.
    private func permute(_ src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>, _ s: DispatchState,
                         toExpertMajor: Bool) {
        for i in 0 ..< G * s.slots where s.recvPerSourceSlot[i] > 0 {
            let (from, to) = toExpertMajor ? (s.sourceOffsets[i], s.expertOffsets[i]) : (s.expertOffsets[i], s.sourceOffsets[i])
            (dst + to * width).update(from: src + from * width, count: s.recvPerSourceSlot[i] * width)
        }
    }
}

// Token dispatch for expert parallelism: moves token rows to the ranks that own
// their experts and back, by all-to-all exchanges over the expert group.
//
//   plan      local: rows per destination expert; communicates: one count
//             exchange so each rank learns how many rows it receives per source
//             and local expert
//   dispatch  rows sorted by expert -> owners; received rows re-ordered from
//             [source][local expert] to [local expert][source], so every local
//             expert's rows are contiguous (one GEMM per expert); communicates
//   combine   the mirror: expert-major rows -> [source][expert] -> back to the
//             rank and position each row came from; communicates
//
// Both directions are permutations, so each one's backward is the other.
import Collectives

/// How one MoE use's rows travel; computed by `TokenDispatcher.plan`.
struct DispatchPlan {
    /// Rows this rank sends to each expert (all E experts).
    var sendPerExpert: [Int] = []
    /// Rows this rank receives, [source group rank][local expert].
    var recvPerSourceExpert: [Int] = []
    var sendRows = 0
    var recvRows = 0
    /// Rows per local expert after dispatch (expert-major segments).
    var rowsPerLocalExpert: [Int] = []
}

final class TokenDispatcher {
    let ctx: ParallelContext
    /// Floats per row.
    let width: Int
    private let staging = FloatBuffer()

    init(ctx: ParallelContext, width: Int) { self.ctx = ctx; self.width = width }

    private var G: Int { ctx.expertGroup.size }
    private var localE: Int { ctx.localExperts.count }

    /// Exchanges the per-expert row counts (communicates).
    func plan(sendPerExpert: [Int]) -> DispatchPlan {
        var p = DispatchPlan()
        p.sendPerExpert = sendPerExpert
        p.sendRows = sendPerExpert.reduce(0, +)
        p.recvPerSourceExpert = ctx.timer.measure(.allToAll) {
            ctx.expertGroup.exchangeCounts(sendPerExpert, sendBlocks: ctx.expertSlices.map { $0.count },
                                           recvBlocks: [Int](repeating: localE, count: G))
        }
        p.recvRows = p.recvPerSourceExpert.reduce(0, +)
        p.rowsPerLocalExpert = (0 ..< localE).map { le in (0 ..< G).reduce(0) { $0 + p.recvPerSourceExpert[$1 * localE + le] } }
        return p
    }

    /// `rows` [sendRows, width], sorted by expert -> `expertMajor` [recvRows, width] (communicates).
    func dispatch(_ rows: UnsafePointer<Float>, plan p: DispatchPlan, into expertMajor: UnsafeMutablePointer<Float>) {
        let stage = staging.ensure(p.recvRows * width)
        let t = PhaseTimer.now()
        ctx.expertGroup.allToAllV(send: UnsafeBufferPointer(start: rows, count: p.sendRows * width),
                                  sendCounts: toOwners(p), recv: UnsafeMutableBufferPointer(start: stage, count: p.recvRows * width),
                                  recvCounts: fromSources(p))
        ctx.timer.add(.allToAll, since: t)
        permute(stage, to: expertMajor, counts: p.recvPerSourceExpert, toExpertMajor: true)
    }

    /// `expertMajor` [recvRows, width] -> `rows` [sendRows, width] in the order they were dispatched (communicates).
    func combine(_ expertMajor: UnsafePointer<Float>, plan p: DispatchPlan, into rows: UnsafeMutablePointer<Float>) {
        let stage = staging.ensure(p.recvRows * width)
        permute(expertMajor, to: stage, counts: p.recvPerSourceExpert, toExpertMajor: false)
        let t = PhaseTimer.now()
        ctx.expertGroup.allToAllV(send: UnsafeBufferPointer(start: stage, count: p.recvRows * width), sendCounts: fromSources(p),
                                  recv: UnsafeMutableBufferPointer(start: rows, count: p.sendRows * width),
                                  recvCounts: toOwners(p))
        ctx.timer.add(.allToAll, since: t)
    }

    /// Floats sent to each group rank: the rows of the experts it owns.
    private func toOwners(_ p: DispatchPlan) -> [Int] {
        ctx.expertSlices.map { sl in sl.reduce(0) { $0 + p.sendPerExpert[$1] } * width }
    }
    /// Floats received from each group rank.
    private func fromSources(_ p: DispatchPlan) -> [Int] {
        (0 ..< G).map { s in (0 ..< localE).reduce(0) { $0 + p.recvPerSourceExpert[s * localE + $1] } * width }
    }

    /// Reorders blocks of rows between [source][local expert] and [local expert][source] order.
    private func permute(_ src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>, counts: [Int], toExpertMajor: Bool) {
        let L = localE
        var sourceMajor = [Int](repeating: 0, count: G * L), expertMajor = [Int](repeating: 0, count: G * L)
        var acc = 0
        for s in 0 ..< G { for le in 0 ..< L { sourceMajor[s * L + le] = acc; acc += counts[s * L + le] } }
        acc = 0
        for le in 0 ..< L { for s in 0 ..< G { expertMajor[s * L + le] = acc; acc += counts[s * L + le] } }
        for i in 0 ..< G * L where counts[i] > 0 {
            let (from, to) = toExpertMajor ? (sourceMajor[i], expertMajor[i]) : (expertMajor[i], sourceMajor[i])
            (dst + to * width).update(from: src + from * width, count: counts[i] * width)
        }
    }
}

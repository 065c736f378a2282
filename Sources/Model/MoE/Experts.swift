// The experts of an MoE layer, and the feed-forward network each of them (or a dense FFN) computes on
// contiguous rows: gelu(x·w1)·w2 or (silu(x·w1) ⊙ (x·w3))·w2. Local: no communication.
// Forward saves the hidden pre-activations; backward adds into dx and the weight gradients.
import Kernels
import Configuration

/// The weights (or weight gradients) of one FFN: a dense FFN or one expert's slice of a pool.
struct FFNWeights {
    var w1: UnsafeMutablePointer<Float>      // [d, F]
    var w3: UnsafeMutablePointer<Float>?     // [d, F] (swiglu)
    var w2: UnsafeMutablePointer<Float>      // [F, d]
}

/// What an FFN's forward saves for its backward, for n rows.
final class FFNActivations {
    let h1 = FloatBuffer()    // [n,F] x·w1
    let h3 = FloatBuffer()    // [n,F] x·w3 (swiglu; else unused)
    let act = FloatBuffer()   // [n,F] gelu(h1) or silu(h1) ⊙ h3

    /// Bytes for n rows (buffer table, see MicroBatchShape).
    static func bufferBytes(rows n: Int, _ s: MicroBatchShape) -> Int { 4 * n * s.F * s.mats }

    func ensure(rows n: Int, F: Int, activation: Activation) {
        h1.ensure(n * F); act.ensure(n * F)
        h3.ensure(activation == .swiglu ? n * F : 1)
    }
}

/// Scratch of an FFN backward, for n rows (reused; never saved): d(act), which becomes d(h1) in place, and
/// d(h3) (swiglu).
final class FFNBackwardScratch {
    let dact = FloatBuffer(), dh3 = FloatBuffer()   // [n,F] each (dh3: swiglu)

    /// Bytes for n rows (buffer table, see MicroBatchShape): gelu 1, swiglu 2 [n,F] buffers.
    static func bufferBytes(rows n: Int, _ s: MicroBatchShape) -> Int { 4 * n * s.F * (s.mats - 1) }

    func ensure(rows n: Int, F: Int, activation: Activation) {
        dact.ensure(n * F)
        dh3.ensure(activation == .swiglu ? n * F : 1)
    }
}

enum ExpertFFN {
    /// y[n,d] = FFN(x[n,d]) (overwritten); saves h1[n,F], h3[n,F] (swiglu) and act[n,F]. `workers` > 1 splits
    /// the products (a dense FFN on all rows; an expert runs on one thread).
    static func forward(y: UnsafeMutablePointer<Float>, h1: UnsafeMutablePointer<Float>, h3: UnsafeMutablePointer<Float>,
                        act: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, w: FFNWeights,
                        n: Int, d: Int, F: Int, activation: Activation, workers: Int = 1) {
        guard n > 0 else { return }
        matmulForward(h1, x, w.w1, n, d, F, workers: workers)
        switch activation {
        case .gelu:
            geluForward(act, h1, n * F)
        case .swiglu:
            matmulForward(h3, x, w.w3!, n, d, F, workers: workers)
            swigluForward(act, h1, h3, n * F)
        }
        matmulForward(y, act, w.w2, n, F, d, workers: workers)
    }

    /// dx[n,d] += and dw += the gradient from dy[n,d]; scratch dact (d(act), then d(h1) in place) and dh3
    /// (swiglu) of n·F each, overwritten, so they need no zeroing.
    static func backward(dx: UnsafeMutablePointer<Float>, dw: FFNWeights, dy: UnsafePointer<Float>,
                         x: UnsafePointer<Float>, h1: UnsafePointer<Float>, h3: UnsafePointer<Float>,
                         act: UnsafePointer<Float>, w: FFNWeights,
                         dact: UnsafeMutablePointer<Float>, dh3: UnsafeMutablePointer<Float>,
                         n: Int, d: Int, F: Int, activation: Activation, workers: Int = 1) {
        guard n > 0 else { return }
        matmulBackward(dact, dw.w2, dy, act, w.w2, n, F, d, overwriteInput: true, workers: workers)
        switch activation {
        case .gelu:
            geluBackwardInPlace(dact, h1, n * F)
        case .swiglu:
            swigluBackwardInPlace(dact, dh3, h1, h3, n * F)
            matmulBackward(dx, dw.w3!, dh3, x, w.w3!, n, d, F, workers: workers)
        }
        matmulBackward(dx, dw.w1, dact, x, w.w1, n, d, F, workers: workers)    // dact now holds d(h1)
    }
}

/// The experts this rank runs in one MoE use (its slots: the local experts it keeps and any lent to it),
/// each run once on its contiguous rows of an expert-major buffer (one GEMM per weight). Experts touch
/// disjoint rows, hidden buffers and weight-gradient slices, so they run on the rank's threads, busiest
/// expert first, each thread taking the next expert when it finishes one (routing leaves experts uneven: a
/// fixed split kept one thread waiting for the other), with the same result.
final class Experts {
    let d: Int, F: Int
    let activation: Activation
    let ctx: ParallelContext
    private let scratch = FFNBackwardScratch()
    private var offsets: [Int]        // [slots] first row of each slot's expert (room for E)
    private var order: [Int]          // [slots] slots by rows, most first
    private var busyExperts = 0       // how many of them have rows (the first ones of `order`)
    private let cursor = WorkCursor()

    init(cfg: MoELayerConfig, dModel: Int, ctx: ParallelContext) {
        d = dModel; F = cfg.dFF; activation = cfg.activation; self.ctx = ctx
        offsets = [Int](repeating: 0, count: cfg.numExperts)
        order = Array(0 ..< cfg.numExperts)
    }

    /// y[rows,d] = expert(x) on each slot's rows (`rows[i]` of them for slot i < `slots`, expert-major), with
    /// `weights(i)` the weights of slot i; saves into `saved`.
    func forward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, rows: [Int], slots: Int,
                 weights: (Int) -> FFNWeights, saved: FFNActivations) {
        let total = planWork(rows, slots: slots)
        saved.ensure(rows: total, F: F, activation: activation)
        let (h1, h3, act) = (saved.h1.pointer, saved.h3.pointer, saved.act.pointer)
        let swiglu = activation == .swiglu
        forEachExpert(rows) { le, n, off, workers in
            ExpertFFN.forward(y: y + off * d, h1: h1 + off * F, h3: swiglu ? h3 + off * F : h3, act: act + off * F,
                              x: x + off * d, w: weights(le), n: n, d: d, F: F, activation: activation,
                              workers: workers)
        }
    }

    /// dx[rows,d] += and each slot's weight gradient (`grads(i)`) += the gradient from dy[rows,d].
    func backward(_ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, rows: [Int],
                  slots: Int, weights: (Int) -> FFNWeights, grads: (Int) -> FFNWeights, saved: FFNActivations) {
        let total = planWork(rows, slots: slots)
        scratch.ensure(rows: total, F: F, activation: activation)
        let (h1, h3, act) = (saved.h1.pointer, saved.h3.pointer, saved.act.pointer)
        let (dact, dh3) = (scratch.dact.pointer, scratch.dh3.pointer)
        let swiglu = activation == .swiglu
        forEachExpert(rows) { le, n, off, workers in
            ExpertFFN.backward(dx: dx + off * d, dw: grads(le), dy: dy + off * d, x: x + off * d,
                               h1: h1 + off * F, h3: swiglu ? h3 + off * F : h3, act: act + off * F,
                               w: weights(le), dact: dact + off * F,
                               dh3: swiglu ? dh3 + off * F : dh3, n: n, d: d, F: F, activation: activation,
                               workers: workers)
        }
    }

    /// Runs body(slot, rows, first row, threads for its products) for every slot with rows: side
    /// by side on the rank's threads when there are at least as many such experts as threads, else one after
    /// another with each product split over the threads (a rank holding one or two experts of a large
    /// expert-parallel group).
    private func forEachExpert(_ rows: [Int], _ body: (Int, Int, Int, Int) -> Void) {
        let tExperts = PhaseTimer.now()
        let busy = busyExperts, workers = ctx.blasWorkers
        offsets.withUnsafeBufferPointer { off in
            order.withUnsafeBufferPointer { order in
                if busy >= workers {
                    Blas.parallel(workers: workers, claiming: cursor, items: busy) { i in
                        body(order[i], rows[order[i]], off[order[i]], 1)
                    }
                } else {
                    for i in 0 ..< busy { body(order[i], rows[order[i]], off[order[i]], workers) }
                }
            }
        }
        ctx.timer.add(.experts, since: tExperts)
    }

    /// Row offsets of the slots' segments and the order to run them in (most rows first, then by index;
    /// an insertion sort: tens of experts, and no allocation in the step). Returns the total rows.
    private func planWork(_ rows: [Int], slots: Int) -> Int {
        var acc = 0
        for i in 0 ..< slots { offsets[i] = acc; acc += rows[i] }
        for i in 0 ..< slots { order[i] = i }
        for i in 1 ..< max(1, slots) {
            let e = order[i]
            var j = i
            while j > 0 && rows[order[j - 1]] < rows[e] { order[j] = order[j - 1]; j -= 1 }
            order[j] = e
        }
        busyExperts = 0
        while busyExperts < slots && rows[order[busyExperts]] > 0 { busyExperts += 1 }
        return acc
    }
}

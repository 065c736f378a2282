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

/// An FFN's weights packed for PackedMatmul, as they are multiplied: forward w1 [d,F], w3 [d,F] (swiglu),
/// w2 [F,d]; backward (`transposed`) w1ᵀ [F,d], w3ᵀ [F,d], w2ᵀ [d,F].
struct PackedFFN {
    var kernel: PackedMatmul.Kernel
    var w1: UnsafePointer<Float>
    var w3: UnsafePointer<Float>?
    var w2: UnsafePointer<Float>
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
    /// the products (a dense FFN on all rows; an expert runs on one thread). With `packed` (w packed as
    /// multiplied), the products go through PackedMatmul instead of BLAS.
    static func forward(y: UnsafeMutablePointer<Float>, h1: UnsafeMutablePointer<Float>, h3: UnsafeMutablePointer<Float>,
                        act: UnsafeMutablePointer<Float>, x: UnsafePointer<Float>, w: FFNWeights, packed: PackedFFN? = nil,
                        n: Int, d: Int, F: Int, activation: Activation, workers: Int = 1) {
        guard n > 0 else { return }
        // out[n,N] = inp[n,K] · W, W [K,N] stored or packed
        func product(_ out: UnsafeMutablePointer<Float>, _ inp: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                     _ p: UnsafePointer<Float>?, K: Int, N: Int) {
            if let p, let kernel = packed?.kernel {
                PackedMatmul.multiply(out, inp, p, M: n, K: K, N: N, kernel: kernel, workers: workers)
            } else { matmulForward(out, inp, w, n, K, N, workers: workers) }
        }
        product(h1, x, w.w1, packed?.w1, K: d, N: F)
        switch activation {
        case .gelu:
            geluForward(act, h1, n * F)
        case .swiglu:
            product(h3, x, w.w3!, packed?.w3, K: d, N: F)
            swigluForward(act, h1, h3, n * F)
        }
        product(y, act, w.w2, packed?.w2, K: F, N: d)
    }

    /// dx[n,d] += and dw += the gradient from dy[n,d]; scratch dact (d(act), then d(h1) in place) and dh3
    /// (swiglu) of n·F each, overwritten, so they need no zeroing. With `packed` (w's transposes packed), the
    /// input-gradient products go through PackedMatmul; the weight-gradient products always use BLAS.
    static func backward(dx: UnsafeMutablePointer<Float>, dw: FFNWeights, dy: UnsafePointer<Float>,
                         x: UnsafePointer<Float>, h1: UnsafePointer<Float>, h3: UnsafePointer<Float>,
                         act: UnsafePointer<Float>, w: FFNWeights, packed: PackedFFN? = nil,
                         dact: UnsafeMutablePointer<Float>, dh3: UnsafeMutablePointer<Float>,
                         n: Int, d: Int, F: Int, activation: Activation, workers: Int = 1) {
        guard n > 0 else { return }
        // dinp[n,C] (+)= dout[n,OC] · Wᵀ and dW[C,OC] += inpᵀ · dout, for W [C,OC]
        func product(_ dinp: UnsafeMutablePointer<Float>, _ dW: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>,
                     _ inp: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ p: UnsafePointer<Float>?,
                     C: Int, OC: Int, overwrite: Bool) {
            if let p, let kernel = packed?.kernel {
                if overwrite { PackedMatmul.multiply(dinp, dout, p, M: n, K: OC, N: C, kernel: kernel, workers: workers) }
                else { PackedMatmul.multiplyAdding(dinp, dout, p, M: n, K: OC, N: C, kernel: kernel, workers: workers) }
                matmulBackward(nil, dW, dout, inp, w, n, C, OC, workers: workers)
            } else {
                if overwrite { matmulBackwardOverwritingInput(dinp, dW, dout, inp, w, n, C, OC, workers: workers) }
                else { matmulBackward(dinp, dW, dout, inp, w, n, C, OC, workers: workers) }
            }
        }
        product(dact, dw.w2, dy, act, w.w2, packed?.w2, C: F, OC: d, overwrite: true)
        switch activation {
        case .gelu:
            geluBackwardInPlace(dact, h1, n * F)
        case .swiglu:
            swigluBackwardInPlace(dact, dh3, h1, h3, n * F)
            product(dx, dw.w3!, dh3, x, w.w3!, packed?.w3, C: d, OC: F, overwrite: false)
        }
        product(dx, dw.w1, dact, x, w.w1, packed?.w1, C: d, OC: F, overwrite: false)    // dact now holds d(h1)
    }
}

/// The experts this rank runs in one MoE use (the slots of its plan, ExpertSlots: the local experts it keeps
/// and any lent to it), each run once on its contiguous rows of an expert-major buffer (one GEMM per weight).
/// Experts touch disjoint rows, hidden buffers and weight-gradient slices, so they run on the rank's threads,
/// busiest expert first, each thread taking the next expert when it finishes one (routing leaves experts
/// uneven: a fixed split kept one thread waiting for the other), with the same result.
///
/// Where the context runs PackedMatmul (`ParallelContext.expertKernel`: AVX2 or AVX-512) and the experts are
/// shared by the iterations (`moe.experts: shared`), each expert's weights are packed once per model pass and
/// direction (forward: w; backward: wᵀ) and reused by the pass's later iterations: the weights cannot change
/// within one `RecurrentMoEModel.step`, which calls `beginPass()` first. Packs sit by expert (the plan's
/// `pack`: held expert j at j, the i-th guest at L + i), so a plan that moves experts between slots from use
/// to use does not defeat the reuse; a guest's weights arrive anew with every use and are packed every time.
/// Per-iteration experts would be packed at every use for no gain, so they keep the BLAS products.
final class Experts {
    let d: Int, F: Int
    let activation: Activation
    private let mats: Int             // weight matrices per expert: 2 (gelu) or 3 (swiglu)
    let ctx: ParallelContext
    private let scratch = FFNBackwardScratch()
    private var offsets: [Int]        // [slots] first row of each slot's expert (room for E)
    private var order: [Int]          // [slots] slots by rows, most first
    private var busyExperts = 0       // how many of them have rows (the first ones of `order`)
    private let cursor = WorkCursor()
    private let packs = FloatBuffer()                    // [packSlots, packFloats] the packed weights
    private var packBase: UnsafeMutablePointer<Float>    // packs' first 64-byte boundary (loads never split a line)
    private let packedFrom: UnsafeMutablePointer<PackKey>    // [packSlots] what each pack holds
    private let packSlots: Int                           // held experts + most guests (as the estimate)
    /// The packed kernel of the products (nil: BLAS), fixed when the layer is built so packs keep one layout.
    private let kernel: PackedMatmul.Kernel?
    private var pass = 0

    /// What a slot's pack was made from: a slot keeps it while the same weights come back in the same pass.
    private struct PackKey: Equatable {
        var weights: UnsafeMutablePointer<Float>?, transposed = false, pass = -1
    }

    /// `guestSlots`: the most experts a plan has this rank run beyond the ones it holds (packs kept for them).
    init(cfg: MoELayerConfig, dModel: Int, guestSlots: Int, ctx: ParallelContext) {
        d = dModel; F = cfg.dFF; activation = cfg.activation; mats = cfg.activation == .swiglu ? 3 : 2; self.ctx = ctx
        offsets = [Int](repeating: 0, count: cfg.numExperts)
        order = Array(0 ..< cfg.numExperts)
        packSlots = ctx.localExperts.count + guestSlots
        kernel = Experts.packedKernel(cfg.experts, ctx.expertKernel)
        packedFrom = .allocate(capacity: max(packSlots, 1))
        packedFrom.initialize(repeating: PackKey(), count: max(packSlots, 1))
        packBase = packs.pointer
    }
    deinit { packedFrom.deinitialize(count: max(packSlots, 1)); packedFrom.deallocate() }

    /// The packed kernel the products run with, nil for BLAS: shared experts (per-iteration ones would be
    /// packed at every use), where the products run packed (`kernel`, nil: BLAS). The model and its memory
    /// estimate both ask this.
    static func packedKernel(_ sharing: Sharing, _ kernel: PackedMatmul.Kernel?) -> PackedMatmul.Kernel? {
        sharing == .shared ? kernel : nil
    }

    /// Floats of one slot's pack: mats matrices of the larger of the forward and transposed packed sizes.
    static func packFloats(d: Int, F: Int, mats: Int, kernel: PackedMatmul.Kernel) -> Int {
        mats * max(PackedMatmul.packedFloats(K: d, N: F, kernel: kernel),
                   PackedMatmul.packedFloats(K: F, N: d, kernel: kernel))
    }

    /// Bytes of the packs (buffer table, see MicroBatchShape): one per held expert (all E with one rank per
    /// group) and per guest slot, in the layout of the shape's kernel; none where the experts keep the BLAS products.
    static func packBytes(_ s: MicroBatchShape) -> Int {
        guard let kernel = s.packKernel else { return 0 }
        return 4 * ((s.L + s.guestSlots) * packFloats(d: s.d, F: s.F, mats: s.mats, kernel: kernel) + 16)
    }

    /// Starts a model pass: the weights may have changed since the last one, so no pack is reused.
    func beginPass() { pass += 1 }

    /// Room for every pack, allocated at the first packed use (as the estimate counts), from a 64-byte
    /// boundary (a panel row is four cache lines with AVX-512, one with AVX2; a misaligned one made every load
    /// straddle two lines).
    private func preparePacks(_ kernel: PackedMatmul.Kernel) {
        let floats = packSlots * Experts.packFloats(d: d, F: F, mats: mats, kernel: kernel) + 16
        guard packs.capacity < floats else { return }
        packs.ensure(floats)
        packedFrom.update(repeating: PackKey(), count: packSlots)
        let misaligned = Int(bitPattern: packs.pointer) & 63
        packBase = packs.pointer + (misaligned == 0 ? 0 : (64 - misaligned) / 4)
    }

    /// Weights w packed for the forward products (or, `transposed`, for the input-gradient ones) in pack j:
    /// packed now unless pack j already holds them from this pass (j < L: a held expert; else a guest).
    private func packed(_ j: Int, _ w: FFNWeights, transposed: Bool, _ kernel: PackedMatmul.Kernel) -> PackedFFN {
        let reusable = j < ctx.localExperts.count
        let part = Experts.packFloats(d: d, F: F, mats: 1, kernel: kernel)
        let base = packBase + j * part * mats
        let p = PackedFFN(kernel: kernel, w1: base, w3: w.w3 == nil ? nil : base + 2 * part, w2: base + part)
        let key = PackKey(weights: w.w1, transposed: transposed, pass: pass)
        if reusable && packedFrom[j] == key { return p }
        if transposed {   // w1ᵀ [F,d], w3ᵀ [F,d], w2ᵀ [d,F]
            PackedMatmul.packTransposed(base, w.w1, K: F, N: d, kernel: kernel)
            if let w3 = w.w3 { PackedMatmul.packTransposed(base + 2 * part, w3, K: F, N: d, kernel: kernel) }
            PackedMatmul.packTransposed(base + part, w.w2, K: d, N: F, kernel: kernel)
        } else {          // w1 [d,F], w3 [d,F], w2 [F,d]
            PackedMatmul.pack(base, w.w1, K: d, N: F, kernel: kernel)
            if let w3 = w.w3 { PackedMatmul.pack(base + 2 * part, w3, K: d, N: F, kernel: kernel) }
            PackedMatmul.pack(base + part, w.w2, K: F, N: d, kernel: kernel)
        }
        packedFrom[j] = reusable ? key : PackKey()
        return p
    }

    /// y[rows,d] = expert(x) on each slot's rows (`rows[i]` of them for slot i of `plan`, expert-major), with
    /// the slot's weights and pack; saves into `saved`.
    func forward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, rows: [Int], plan: ExpertSlots,
                 saved: FFNActivations) {
        let total = planWork(rows, slots: plan.count)
        saved.ensure(rows: total, F: F, activation: activation)
        let (h1, h3, act) = (saved.h1.pointer, saved.h3.pointer, saved.act.pointer)
        let swiglu = activation == .swiglu, kernel = kernel
        if let kernel { preparePacks(kernel) }
        forEachExpert(rows) { i, n, off, workers in
            let w = plan.weights[i]!
            ExpertFFN.forward(y: y + off * d, h1: h1 + off * F, h3: swiglu ? h3 + off * F : h3, act: act + off * F,
                              x: x + off * d, w: w,
                              packed: kernel.map { packed(plan.pack[i], w, transposed: false, $0) },
                              n: n, d: d, F: F, activation: activation, workers: workers)
        }
    }

    /// dx[rows,d] += and each slot's weight gradient (`plan.grads`) += the gradient from dy[rows,d].
    func backward(_ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, rows: [Int],
                  plan: ExpertSlots, saved: FFNActivations) {
        let total = planWork(rows, slots: plan.count)
        scratch.ensure(rows: total, F: F, activation: activation)
        let (h1, h3, act) = (saved.h1.pointer, saved.h3.pointer, saved.act.pointer)
        let (dact, dh3) = (scratch.dact.pointer, scratch.dh3.pointer)
        let swiglu = activation == .swiglu, kernel = kernel
        if let kernel { preparePacks(kernel) }
        forEachExpert(rows) { i, n, off, workers in
            let w = plan.weights[i]!
            ExpertFFN.backward(dx: dx + off * d, dw: plan.grads[i]!, dy: dy + off * d, x: x + off * d,
                               h1: h1 + off * F, h3: swiglu ? h3 + off * F : h3, act: act + off * F,
                               w: w, packed: kernel.map { packed(plan.pack[i], w, transposed: true, $0) },
                               dact: dact + off * F,
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

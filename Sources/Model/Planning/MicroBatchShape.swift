// The sizes a micro-batch gives the model's buffers, for the buffer tables next to each part of the model
// (`bufferBytes`): MemoryEstimate sums those tables, and a test compares the sum with what a built model
// actually allocates, so the estimate cannot drift from the code.
import Configuration
import Kernels

struct MicroBatchShape {
    let B: Int, T: Int, d: Int, H: Int, V: Int, R: Int
    let E: Int, k: Int, F: Int
    /// Hidden tensors per FFN row: 2 (gelu: h1, act) or 3 (swiglu: h1, h3, act).
    let mats: Int
    let dense: Bool
    let auxScope: AuxScope
    /// World size, expert-group size, experts held here, threads of a parallel region.
    let W: Int, G: Int, L: Int, workers: Int
    /// The expert placement's terms (ExpertPlacement): the most experts a rank runs beyond the ones it holds
    /// in one MoE use, and the bytes of the placement's scratch per MoE layer (both 0 without lending).
    let guestSlots: Int, placementBytes: Int
    /// The kernel of the experts' packed products (PackedMatmul: AVX2 or AVX-512, shared experts), whose packs
    /// count; nil where they run on BLAS.
    let packKernel: PackedMatmul.Kernel?
    /// Tokens of the micro-batch on this rank.
    var N: Int { B * T }
    /// Rows this rank sends per MoE use (its kept assignments): N·k dropless.
    var sentRows: Int { dense ? 0 : N * k }
    /// Rows this rank's experts receive per MoE use: N·k with balanced routing (each of the G ranks of the
    /// group sends N·k rows over all E experts and this rank holds E/G of them); exact when G = 1.
    var expertRows: Int { dense ? 0 : N * k }

    init(_ c: RunConfig, microBatch: Int, worldSize W: Int = 1, expertParallel G: Int, workers: Int = 1,
         packedProducts: PackedMatmul.Kernel?) {
        let m = c.model, f = c.moe
        B = microBatch; T = m.seqLen; d = m.dModel; H = m.nHeads; V = m.vocabSize; R = m.depth
        E = f.numExperts; k = f.topK; F = f.dFF; mats = f.activation == .swiglu ? 3 : 2; dense = f.isDense
        auxScope = f.auxScope
        self.W = W; self.G = max(G, 1); L = f.isDense ? 0 : (f.numExperts + max(G, 1) - 1) / max(G, 1)
        self.workers = max(workers, 1)
        (guestSlots, placementBytes) = ExpertLending.bufferTerms(c, groupSize: self.G, d: d, F: F, mats: mats)
        packKernel = f.isDense ? nil : Experts.packedKernel(f.experts, packedProducts)
    }
}

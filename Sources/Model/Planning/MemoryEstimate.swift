// Analytic memory of one rank during training, from the configuration alone (float32 = 4 bytes):
//
//   parameters   P_rank = trunk + ceil(E/G)·(2 or 3)·d·F per pool          (trunk replicated, experts sliced)
//   gradients    P_rank            moments   2·P_rank                        (AdamW m and v)
//   activations  what backward needs from one micro-batch of N = micro_batch·T local tokens: R times the
//                iteration's saved buffers (IterationActivations.bufferBytes), plus the buffers saved once
//                (RecurrentMoEModel.savedOnceBytes)
//   scratch      working buffers reused by every iteration (RecurrentMoEModel.scratchBytes and the parts'
//                scratch tables it sums), with the experts' packed weights where PackedMatmul runs (AVX-512):
//                one copy of the weights of every expert a rank runs (held ones and the placement's guest slots)
//
// The activation and scratch terms are the buffer tables that sit next to each part of the model
// (AttentionActivations, MoEUseState, Router, TokenDispatcher, ...), evaluated at MicroBatchShape; a test
// builds the model, runs a step and checks that it allocates exactly this. X = rows an expert-parallel rank
// receives per use = N·k with balanced routing (exact with one rank per expert group). Buffers grow by 1.5x
// when a later step needs more rows (`Buffer.ensure`), which the estimate does not include.
import Configuration
import Kernels

public struct MemoryEstimate: Sendable, Codable {
    /// Parameters held by the rank (trunk + its expert slice), elements.
    public var parameters: Int
    public var parameterBytes: Int
    public var gradientBytes: Int
    /// AdamW first and second moments.
    public var optimizerBytes: Int
    /// Saved forward state of one micro-batch (what backward needs).
    public var activationBytes: Int
    /// Working buffers of forward and backward (reused, not saved).
    public var scratchBytes: Int
    public var totalBytes: Int { parameterBytes + gradientBytes + optimizerBytes + activationBytes + scratchBytes }

    /// `microBatch` sequences of seq_len tokens per micro-step; `expertParallel` = G ranks share one copy of the
    /// experts (the estimate is for a rank holding the largest slice, ceil(E/G)); `worldSize` sizes the
    /// capacity limit's per-rank counts; `workers` = threads of a parallel region (attention scratch);
    /// `packedExpertWeights`: the PackedMatmul kernel the ranks run (ParallelContext.expertKernel), whose layout
    /// the packs take (nil: BLAS, no packs).
    public init(_ c: RunConfig, expertParallel G: Int, microBatch B: Int, worldSize W: Int = 1, workers: Int = 1,
                packedExpertWeights: PackedMatmul.Kernel?) {
        var trunk = 0, expertPerExpert = 0
        for t in ModelTensors.list(c) {
            if t.isExpert { expertPerExpert += t.shape.dropFirst().reduce(1, *) } else { trunk += t.shape.reduce(1, *) }
        }
        let shape = MicroBatchShape(c, microBatch: B, worldSize: max(W, G), expertParallel: G, workers: workers,
                                    packedProducts: packedExpertWeights)
        parameters = trunk + shape.L * expertPerExpert
        parameterBytes = 4 * parameters
        gradientBytes = 4 * parameters
        optimizerBytes = 8 * parameters
        activationBytes = shape.R * IterationActivations.bufferBytes(shape) + RecurrentMoEModel.savedOnceBytes(shape)
        scratchBytes = RecurrentMoEModel.scratchBytes(shape)
    }
}

// Sizes checked before anything is allocated: `train`, `eval` and `bench` compare the memory estimate of
// a rank (MemoryEstimate, what `moe-dist estimate` prints) with the memory the rank may use
// (AvailableMemory: MemAvailable, the memory cgroup, the Slurm allocation). A configuration that cannot
// fit is a configuration error (exit status 2) naming the estimate, the memory available and the key
// whose value most of the estimate grows with, instead of an allocation that spins or is killed.
import Configuration
import Collectives
import Kernels
import Model

public enum MemoryFit {
    /// What is being sized: a training rank (parameters, gradients, moments, one micro-batch's activations)
    /// or an evaluating one (parameters and one batch's activations).
    public enum Use: Sendable { case training, evaluation }

    /// Bytes one rank of `c` needs on `worldSize` ranks (expert groups as ParallelContext makes them).
    public static func estimate(_ c: RunConfig, worldSize W: Int, use: Use) -> Int {
        let G = c.moe.isDense ? 1 : min(c.parallel.expertParallel ?? W, max(c.moe.numExperts, 1))
        let m = MemoryEstimate(c, expertParallel: G, microBatch: max(c.train.microBatch, 1), worldSize: W,
                               workers: max(Blas.numThreads, 1), packedExpertWeights: ParallelContext.defaultExpertKernel)
        switch use {
        case .training: return m.totalBytes
        case .evaluation: return m.parameterBytes + m.activationBytes + m.scratchBytes
        }
    }

    /// Throws a ConfigError when `ranksInProcess` ranks of `c` (threads of this process with
    /// --emulate-ranks; 1 otherwise) need more than `available` (nil: unknown, nothing is checked).
    /// `command` starts the message ("train", "eval", "bench").
    public static func check(_ c: RunConfig, worldSize W: Int, ranksInProcess: Int = 1, use: Use, command: String,
                             available: AvailableMemory? = AvailableMemory.perRank()) throws {
        guard let available else { return }
        let need = estimate(c, worldSize: W, use: use) * ranksInProcess
        guard need > available.bytes else { return }
        // The key to change: the one whose share of the estimate is largest (the estimate without it).
        var small = c; small.model.vocabSize = 1
        var oneRow = c; oneRow.train.microBatch = 1
        let shares: [(key: String, bytes: Int)] = [
            ("model.vocab_size", need - estimate(small, worldSize: W, use: use) * ranksInProcess),
            ("train.micro_batch", need - estimate(oneRow, worldSize: W, use: use) * ranksInProcess),
        ]
        let modelKeys = c.moe.isDense ? "model.d_model, moe.d_ff or model.depth"
            : "model.d_model, moe.d_ff, moe.num_experts, or spread the experts over more ranks (parallel.expert_parallel)"
        let largest = shares.max { $0.bytes < $1.bytes }!
        let advice = largest.bytes * 2 > need ? "lower \(largest.key) (more than half of the estimate grows with it)"
            : "lower \(modelKeys)"
        let who = ranksInProcess > 1 ? "\(ranksInProcess) ranks in this process need" : "each rank needs"
        throw ConfigError(key: nil, "\(command): \(who) an estimated \(AvailableMemory.gigabytes(need)) "
                          + "(moe-dist estimate shows the parts), but \(AvailableMemory.gigabytes(available.bytes)) is available "
                          + "(\(available.source)); \(advice)")
    }
}

// How many threads may run independent products at once (attention heads, experts) on this rank.
import Collectives
import Kernels

extension ParallelContext {
    /// Blas.configuredThreads when this rank has the process to itself (one rank, or an MPI rank), else 1:
    /// the ranks of an in-process world (`--emulate-ranks`, tests) are themselves the process's threads, one
    /// each, with OpenBLAS on one thread.
    public var blasWorkers: Int { world.isAloneInProcess ? Blas.configuredThreads : 1 }
}

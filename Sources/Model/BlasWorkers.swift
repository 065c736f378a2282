// How many threads may run independent products at once (attention heads, experts) on this rank.
import Collectives
import Kernels

extension ParallelContext {
    /// Blas.configuredThreads when this rank has the process to itself (one rank, or an MPI rank), else 1:
    /// the ranks of an in-process world share OpenBLAS's one global thread setting, which a parallel region
    /// changes, so they keep to OpenBLAS's own threading and stay deterministic.
    public var blasWorkers: Int { world.isAloneInProcess ? Blas.configuredThreads : 1 }
}

// The communicators a model runs with and which experts this rank owns.
//
// world        all ranks: trunk gradients, routing statistics (global micro-batch)
// expertGroup  the ranks that share one copy of each pool's experts: token all-to-all
// replicaGroup the ranks holding the same expert slice in different copies: expert gradients
import Foundation
import Collectives
import Configuration
import Kernels

public struct ParallelContext {
    public let world: Communicator
    public let expertGroup: Communicator
    public let replicaGroup: Communicator
    /// Experts owned by each rank of the expert group (contiguous slices).
    public let expertSlices: [Range<Int>]
    /// Time per phase on this rank (communication is charged where it happens).
    public let timer = PhaseTimer()
    /// Whether and how a busy rank lends experts to a less busy one in each MoE use (`parallel.balance_experts`;
    /// changes no result, see ExpertLending).
    public var expertLending: ExpertLendingPolicy
    /// What lending did so far.
    public let lendingCounter = LendingCounter()
    /// The PackedMatmul kernel of the experts' forward and input-gradient products (nil: OpenBLAS). A model
    /// reads it when it is built, so its packs keep one layout; tests set it to run every kernel, or BLAS.
    public var expertKernel: PackedMatmul.Kernel? = ParallelContext.defaultExpertKernel
    /// The threads of every rank of the world (each node's cores over its ranks, so they can differ between
    /// nodes), filled in by `make`; this rank's alone before.
    public var blasWorkersByRank: [Int]

    public init(world: Communicator, expertGroup: Communicator, replicaGroup: Communicator, expertSlices: [Range<Int>]) {
        self.world = world; self.expertGroup = expertGroup; self.replicaGroup = replicaGroup
        self.expertSlices = expertSlices
        expertLending = .automatic(threads: world.isAloneInProcess ? Blas.configuredThreads : 1)
        blasWorkersByRank = [world.isAloneInProcess ? Blas.configuredThreads : 1]
    }

    /// The kernel contexts start with, decided once per process: the best this CPU runs (PackedMatmul.best),
    /// or OpenBLAS where MOE_DIST_EXPERT_PRODUCTS=blas (`packed` and unset keep the best; the command line
    /// refuses any other value, and `packed` on a CPU without the kernel, before a context is made).
    public static let defaultExpertKernel: PackedMatmul.Kernel? =
        ProcessInfo.processInfo.environment["MOE_DIST_EXPERT_PRODUCTS"] == "blas" ? nil : PackedMatmul.best

    /// What runs the experts' products, for banners and reports.
    public var expertProducts: String { expertKernel.map { "packed \($0) kernel" } ?? "OpenBLAS" }

    /// Every rank's thread count (collective over the world).
    mutating func gatherThreads() {
        var threads = [Double](repeating: 0, count: world.size)
        threads[world.rank] = Double(blasWorkers)
        threads.withUnsafeMutableBufferPointer { world.allReduceSum($0) }
        blasWorkersByRank = threads.map { Int($0) }
    }

    /// Experts held by this rank.
    public var localExperts: Range<Int> { expertSlices[expertGroup.rank] }

    /// A world of one: every expert is local.
    public static func single(numExperts: Int) -> ParallelContext {
        let c = SingleProcessCommunicator()
        return ParallelContext(world: c, expertGroup: c, replicaGroup: c,
                               expertSlices: [0 ..< numExperts])
    }

    /// The context a configuration runs with on `world`: expert groups of parallel.expert_parallel ranks
    /// (default: the world); dense runs have no experts, so every rank is its own group.
    public static func make(world: Communicator, config: RunConfig) throws -> ParallelContext {
        if config.moe.isDense {
            var ctx = ParallelContext(world: world, expertGroup: SingleProcessCommunicator(),
                                      replicaGroup: world, expertSlices: [0 ..< 0])
            ctx.gatherThreads()
            return ctx
        }
        var ctx = try make(world: world, expertParallel: config.parallel.expertParallel ?? world.size,
                           numExperts: config.moe.numExperts)
        ctx.expertLending = ExpertLendingPolicy(config: config, threads: ctx.expertLending.threads)
        return ctx
    }

    /// Splits `world` into expert groups of `expertParallel` consecutive ranks and the replica groups
    /// across them (collective). Throws when the layout is impossible, naming parallel.expert_parallel.
    public static func make(world: Communicator, expertParallel G: Int, numExperts E: Int) throws -> ParallelContext {
        let layout = try ExpertParallelLayout(worldSize: world.size, rank: world.rank, expertParallel: G, numExperts: E)
        let comms = layout.communicators(from: world)
        var ctx = ParallelContext(world: world, expertGroup: comms.expertGroup, replicaGroup: comms.replicaGroup,
                                  expertSlices: (0 ..< G).map { layout.experts(ofGroupRank: $0) })
        // Every rank of a group must derive the same lending plan: agree on the thread count it depends on
        // (ranks of different nodes may run different numbers of BLAS threads).
        ctx.gatherThreads()
        ctx.expertLending = .automatic(threads: ctx.blasWorkersByRank.max() ?? 1)
        return ctx
    }
}

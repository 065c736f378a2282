// Which rank holds which experts (SPEC section 1, `parallel.expert_parallel`).
//
// The world of W ranks is cut into W/G expert groups of G consecutive ranks;
// each group holds one copy of every pool's E experts, split into contiguous
// slices over its G ranks (the first E % G ranks hold one more). Ranks with
// the same position in their group hold the same experts: they form a replica
// group of W/G ranks whose expert gradients are summed.
//
//   W = 6, G = 3, E = 8:   group 0 = ranks 0,1,2   group 1 = ranks 3,4,5
//                          experts 0..<3, 3..<6, 6..<8 on group ranks 0, 1, 2
//                          replica groups {0,3} {1,4} {2,5}

/// A configuration that cannot be laid out, with a message naming the key.
public struct LayoutError: Error, CustomStringConvertible, Equatable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

public struct ExpertParallelLayout: Equatable, Sendable {
    /// W: number of ranks.
    public let worldSize: Int
    /// This rank in `0 ..< worldSize`.
    public let rank: Int
    /// G: ranks sharing one copy of the experts (`parallel.expert_parallel`).
    public let expertParallel: Int
    /// E: experts per pool (`moe.num_experts`).
    public let numExperts: Int

    /// Throws a `LayoutError` naming `parallel.expert_parallel` unless
    /// `1 <= G <= E`, G divides W, and `0 <= rank < W`.
    public init(worldSize: Int, rank: Int, expertParallel: Int, numExperts: Int) throws {
        guard worldSize >= 1 else { throw LayoutError("world size \(worldSize) must be at least 1") }
        guard rank >= 0 && rank < worldSize else { throw LayoutError("rank \(rank) is outside 0..<\(worldSize)") }
        guard expertParallel >= 1 else {
            throw LayoutError("parallel.expert_parallel = \(expertParallel) must be at least 1")
        }
        guard worldSize % expertParallel == 0 else {
            throw LayoutError("parallel.expert_parallel = \(expertParallel) must divide the world size \(worldSize)")
        }
        guard expertParallel <= numExperts else {
            throw LayoutError("parallel.expert_parallel = \(expertParallel) exceeds moe.num_experts = \(numExperts): "
                              + "every rank of an expert group must hold at least one expert")
        }
        self.worldSize = worldSize
        self.rank = rank
        self.expertParallel = expertParallel
        self.numExperts = numExperts
    }

    /// Index of this rank's expert group: `rank / G`. Also the index of the
    /// replica of the experts this rank holds part of.
    public var groupIndex: Int { rank / expertParallel }
    /// This rank's position in its expert group: `rank % G`.
    public var groupRank: Int { rank % expertParallel }
    /// Which copy of its experts this rank holds, in `0 ..< replicaCount` (= `groupIndex`).
    public var replicaIndex: Int { groupIndex }
    /// Copies of each expert in the world: `W / G` (the size of a replica group).
    public var replicaCount: Int { worldSize / expertParallel }

    /// The experts held by group rank `g`: a contiguous slice, `E / G` long
    /// plus one for the first `E % G` group ranks.
    public func experts(ofGroupRank g: Int) -> Range<Int> {
        precondition(g >= 0 && g < expertParallel, "group rank \(g) is outside 0..<\(expertParallel)")
        let q = numExperts / expertParallel, r = numExperts % expertParallel
        let start = g * q + Swift.min(g, r)
        return start ..< start + q + (g < r ? 1 : 0)
    }

    /// The experts this rank holds.
    public var localExperts: Range<Int> { experts(ofGroupRank: groupRank) }

    /// The group rank that holds expert `e`.
    public func owner(ofExpert e: Int) -> Int {
        precondition(e >= 0 && e < numExperts, "expert \(e) is outside 0..<\(numExperts)")
        let q = numExperts / expertParallel, r = numExperts % expertParallel
        let big = r * (q + 1)   // experts held by the first r ranks
        return e < big ? e / (q + 1) : r + (e - big) / q
    }

    /// World rank of group rank `g` in this rank's expert group.
    public func worldRank(ofGroupRank g: Int) -> Int { groupIndex * expertParallel + g }

    /// The two sub-communicators of this layout, made from `world` by two
    /// `split`s (collective: every rank of `world` must call this, in the same
    /// order as its other collectives).
    public func communicators(from world: Communicator) -> ExpertParallelCommunicators {
        if world.size != worldSize || world.rank != rank {
            world.abort(code: 1, message: "ExpertParallelLayout for rank \(rank) of \(worldSize) used with "
                        + "rank \(world.rank) of a communicator of \(world.size)")
        }
        let expertGroup = world.split(color: groupIndex, key: groupRank)
        let replicaGroup = world.split(color: groupRank, key: groupIndex)
        return ExpertParallelCommunicators(expertGroup: expertGroup, replicaGroup: replicaGroup)
    }
}

/// The communicators of an expert-parallel layout.
public struct ExpertParallelCommunicators {
    /// The G ranks that share one copy of the experts (same `rank / G`);
    /// rank in it = `rank % G`. Tokens are exchanged (all-to-all) here.
    public let expertGroup: Communicator
    /// The W/G ranks that hold the same experts (same `rank % G`); rank in it
    /// = `rank / G`. Expert gradients are summed here.
    public let replicaGroup: Communicator
}

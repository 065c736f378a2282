// Communication time per step over the links between nodes, from ClusterEstimate's byte counts and a link
// (bandwidth per node and direction, one-way latency) for ranks placed P per node, consecutive ranks on one
// node (--map-by slot, Slurm's block distribution). Traffic between ranks of one node (shared memory) is
// not counted: the link is the bottleneck this projects. Per step:
//
//   all-to-all   the expert group's peers off the node: (G − min(G, P)) of the G − 1 peers, so a node sends
//                P · A2A · (G − min(G, P)) / (G − 1) bytes over its link (A2A: ClusterEstimate's bytes sent per
//                rank, balanced routing), in 5·M·R exchanges (the count exchange, dispatch and combine, and
//                their two backward mirrors);
//   all-reduce   a ring of n ranks over the nodes crosses each node's link once per direction, carrying
//                2·S·(n−1)/n: trunk gradients and routing statistics over the world (one ring edge per
//                node), expert gradients over the W/G replicas (min(G, P) rings leave each node); rounds:
//                M·R routing-statistics reductions (2·M·R with a capacity), the gradients and the step's
//                scalars, 2·(n−1) ring steps each;
//   latency      every exchange or ring step costs 2 one-way latencies (a message above Open MPI's eager
//                limit waits for the receiver's answer before its data goes), paid only when the collective
//                crosses a link.
// seconds = bytes / (link bytes per second) + rounds · 2 · latency, with the all-reduce's bytes counted
// twice (`allReduceMeasuredFactor`): Open MPI 4.1's all-reduce of a gradient buffer between two hosts
// over TCP took twice the ring's time on rate-limited links (5, 10 and 20 Mbit/s; with its default
// algorithm and with recursive doubling forced alike), while its all-to-all moved data at 0.6-0.8 of the
// link rate (docs/cluster.md). Why is not known; only 2 ranks were measured.
import Configuration

public struct LinkProjection: Sendable, Codable {
    /// The all-reduce's measured time over its ring bytes at the link rate (see the top of the file).
    public static let allReduceMeasuredFactor = 2.0

    public var linkGbps: Double
    public var latencyMs: Double
    public var ranksPerNode: Int
    public var nodes: Int
    /// Bytes a node sends over its link per step, by collective kind.
    public var allToAllLinkBytesPerNode: Double
    public var allReduceLinkBytesPerNode: Double
    /// Collective steps per training step that cross a link (each paying the latency twice).
    public var allToAllLinkRounds: Int
    public var allReduceLinkRounds: Int
    public var allToAllSeconds: Double
    public var allReduceSeconds: Double
    public var communicationSeconds: Double

    public static let formula = "seconds = bytes a node sends over its link / (link_gbps·1e9/8) + rounds · 2 · latency, "
        + "the all-reduce's bytes counted twice (Open MPI over TCP measured at twice the ring's time); "
        + "all-to-all: P·A2A·(G − min(G,P))/(G − 1) bytes, 5·M·R rounds; all-reduce rings: 2·S·(n−1)/n bytes per "
        + "ring leaving a node (trunk and statistics over the world: 1 ring; experts over W/G replicas: min(G,P) rings), "
        + "2·(n−1) rounds per reduction (M·R statistics, gradients, scalars); traffic inside a node is not counted"

    /// `estimate` for ranks placed `ranksPerNode` per node on links of `linkGbps` Gbit/s and `latencyMs` one-way.
    public init(_ estimate: ClusterEstimate, config c: RunConfig, linkGbps: Double, latencyMs: Double, ranksPerNode P: Int) {
        let W = estimate.worldSize, G = estimate.expertParallel, M = estimate.microSteps, R = c.model.depth
        self.linkGbps = linkGbps
        self.latencyMs = latencyMs
        ranksPerNode = P
        nodes = (W + P - 1) / P
        let bytesPerSecond = linkGbps * 1e9 / 8, latency = latencyMs / 1000
        let multiNode = nodes > 1

        // All-to-all inside the expert group: only peers on other nodes load the link.
        let offNodePeers = G > 1 ? Double(G - min(G, P)) / Double(G - 1) : 0
        allToAllLinkBytesPerNode = multiNode ? Double(min(P, W)) * estimate.allToAllBytesPerRank * offNodePeers : 0
        allToAllLinkRounds = multiNode && offNodePeers > 0 ? 5 * M * R : 0

        // Ring all-reduces that span nodes.
        func ring(_ bytes: Int, _ n: Int) -> Double { n > 1 ? 2 * Double(bytes) * Double(n - 1) / Double(n) : 0 }
        let replicas = estimate.expertReplicas
        let replicasSpanNodes = multiNode && replicas > 1 && replicas * min(G, P) > P   // not all on one node
        var bytes = 0.0, rounds = 0
        if multiNode {
            bytes += ring(estimate.allReduceTrunkBytes, W) + ring(estimate.allReduceStatsBytes, W)
            // Routing statistics per MoE use (and the capacity's slot counts), trunk gradients, the step's scalars.
            let perUse = c.moe.isDense ? 0 : c.moe.capacityFactor > 0 ? 2 : 1
            rounds += 2 * (W - 1) * (perUse * M * R + 2)
        }
        if replicasSpanNodes {
            bytes += Double(min(G, P)) * ring(estimate.allReduceExpertBytes, replicas)
            rounds += 2 * (replicas - 1)
        }
        allReduceLinkBytesPerNode = bytes
        allReduceLinkRounds = rounds

        allToAllSeconds = allToAllLinkBytesPerNode / bytesPerSecond + Double(allToAllLinkRounds) * 2 * latency
        allReduceSeconds = LinkProjection.allReduceMeasuredFactor * allReduceLinkBytesPerNode / bytesPerSecond
            + Double(allReduceLinkRounds) * 2 * latency
        communicationSeconds = allToAllSeconds + allReduceSeconds
    }
}

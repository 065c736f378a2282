import Foundation
import ArgumentParser
import Configuration
import DataPipeline
import Model

struct EstimateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "estimate",
        abstract: "Project a configuration to W ranks: memory per rank, FLOPs per token, communication bytes per step.",
        discussion: reflow("""
        Examples:
          moe-dist estimate --config jobs/configs/seed-reference.yaml
          moe-dist estimate --config jobs/configs/seed-reference.yaml --world 64 \\
              --expert-parallel 32 --scale-batch --json
          moe-dist estimate --config jobs/configs/seed-reference.yaml --table \\
              --scale-batch model.vocab_size=32768

        World sizes: --world, or --table (8, 16, ..., 1024), or by default the powers of two up to
        train.global_batch (at most 1024): the world sizes the configured batch can be split over.
        Batch: the same rule as train and bench. train.global_batch stays; the micro-batch is the largest
        <= train.micro_batch such that micro_batch · ranks divides it. A world size that does not divide
        train.global_batch is an error naming the override (--world), or is listed as not shown (--table,
        default). --scale-batch instead keeps train.micro_batch and grows the global batch to the next
        multiple of micro_batch · ranks (weak scaling, as a cluster run would be configured).
        The expert group (--expert-parallel, G) defaults to parallel.expert_parallel when it fits, else to the
        largest divisor of the world size that is at most moe.num_experts. With model.vocab_size 0 the
        vocabulary comes from data.train when that file exists, else 8192 is assumed (say model.vocab_size=N).
        Formulas (see ClusterEstimate.swift and MemoryEstimate.swift, and the "formulas" field of the JSON):
          all-to-all bytes sent per rank per step = 16 · M · R · N · k · d · (G−1)/G
          all-reduce buffers per step: 4 · trunk params (world), 4 · expert params per rank
              (W/G replicas), 8 · (E + 2 + k·E) · M · R routing statistics
          ring traffic per rank per all-reduce of S bytes over n ranks: 2 · S · (n−1)/n
        Links (--link-gbps, --latency-ms, --ranks-per-node P): the all-to-all and all-reduce seconds per step over
        the links between nodes, consecutive ranks P per node; traffic inside a node is not counted:
          seconds = bytes a node sends over its link / bandwidth + rounds · 2 · latency
          all-to-all: P · A2A · (G − min(G,P))/(G − 1) bytes, 5 · M · R rounds
          all-reduce: 2 · S · (n−1)/n per ring leaving a node, counted twice (Open MPI over TCP measured
              at twice the ring's time), 2 · (n−1) rounds per reduction
        Example: moe-dist estimate --config jobs/configs/bench.yaml --world 2 --link-gbps 1 --latency-ms 0.5
        Memory assumes nodes with AVX-512, where each rank also keeps the weights of the experts it runs
        packed for the experts' products (one more copy of its expert weights, with moe.experts shared;
        AVX2 nodes keep them too, in narrower panels that pad less; see the README).
        """))

    @OptionGroup var options: RunOptions

    @Option(help: ArgumentHelp("World size, or a comma-separated list of world sizes.", valueName: "N[,N...]"))
    var world: String?

    @Option(help: ArgumentHelp("Ranks per expert group G (must divide every world size).", valueName: "G"))
    var expertParallel: Int?

    @Flag(help: "World sizes 8, 16, 32, ..., 1024.")
    var table = false

    @Flag(help: "Keep train.micro_batch and grow train.global_batch to a multiple of micro_batch × ranks (weak scaling).")
    var scaleBatch = false

    @Option(help: ArgumentHelp("Project the communication time per step over links of this bandwidth between nodes "
                               + "(Gbit/s per node and direction).", valueName: "Gbit/s"))
    var linkGbps: Double?

    @Option(help: ArgumentHelp("One-way latency of those links (with --link-gbps).", valueName: "ms"))
    var latencyMs: Double = 0

    @Option(help: ArgumentHelp("Ranks per node, consecutive ranks on one node (with --link-gbps).", valueName: "P"))
    var ranksPerNode: Int = 1

    @Flag(help: "Print JSON (snake_case keys).")
    var json = false

    var worlds: [Int] {
        get throws {
            if table { return (3 ... 10).map { 1 << $0 } }
            guard let w = world else { return [] }     // the default, chosen from the configuration in run()
            let parts = w.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) >= 1 }) else {
                throw ValidationError("--world: expected positive integers separated by commas, got '\(w)'")
            }
            return parts.map { $0! }
        }
    }

    func validate() throws {
        let ws = try worlds
        if let g = linkGbps, !(g > 0 && g.isFinite) {
            throw ValidationError("--link-gbps: must be a positive number of Gbit/s, got \(g)")
        }
        guard latencyMs >= 0 && latencyMs.isFinite else { throw ValidationError("--latency-ms: must be >= 0, got \(latencyMs)") }
        guard ranksPerNode >= 1 else { throw ValidationError("--ranks-per-node: must be at least 1, got \(ranksPerNode)") }
        if linkGbps == nil && (latencyMs != 0 || ranksPerNode != 1) {
            throw ValidationError("--latency-ms and --ranks-per-node describe the link of --link-gbps, which is missing")
        }
        if let g = expertParallel {
            guard g >= 1 else { throw ValidationError("--expert-parallel: must be at least 1, got \(g)") }
            for w in ws where w % g != 0 {
                throw ValidationError("--expert-parallel: \(g) does not divide the world size \(w)")
            }
        }
    }

    func run() throws {
        try failingCleanly {
            var c = try options.load()
            let vocabSource = try Self.fillVocabulary(&c)
            if let g = expertParallel, !c.moe.isDense, g > c.moe.numExperts {
                throw UserError("--expert-parallel: \(g) exceeds moe.num_experts = \(c.moe.numExperts)")
            }
            var sizes = try worlds
            if sizes.isEmpty {
                sizes = (0 ... 10).map { 1 << $0 }.filter { $0 <= max(c.train.globalBatch, 1) }
            }
            if let g = expertParallel { sizes = sizes.filter { $0 % g == 0 } }
            let (rows, unsplittable) = try estimates(c, worldSizes: sizes)
            if json {
                let out = EstimateOutput(config: options.config, vocabSize: c.model.vocabSize, vocabSizeSource: vocabSource,
                                         batchRule: scaleBatch ? "scale_batch" : "fit_micro_batch",
                                         unsplittableWorldSizes: unsplittable,
                                         formulas: EstimateOutput.formulaText, estimates: rows)
                let enc = JSONEncoder()
                enc.keyEncodingStrategy = .convertToSnakeCase
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(data: try enc.encode(out), encoding: .utf8)!)
            } else {
                printTable(c, vocabSource: vocabSource, rows: rows, unsplittable: unsplittable)
            }
        }
    }

    /// A configuration without model.vocab_size takes data.train's, or 8192; returns where it came from.
    static func fillVocabulary(_ c: inout RunConfig) throws -> String {
        guard c.model.vocabSize == 0 else { return "model.vocab_size" }
        if let path = c.data.train, FileManager.default.fileExists(atPath: path) {
            c.model.vocabSize = try TokenFile(path: path, checkIDs: false).vocabSize
            return "data.train (\(path))"
        }
        c.model.vocabSize = 8192
        return "assumed 8192 (model.vocab_size is 0 and data.train is absent)"
    }

    /// One estimate per world size, and the default sizes left out because the global batch cannot be split
    /// over them (a listed --world that cannot be split is an error).
    func estimates(_ c: RunConfig, worldSizes sizes: [Int]) throws -> (rows: [ClusterEstimate], unsplittable: [Int]) {
        let listed = world != nil
        var rows: [ClusterEstimate] = [], unsplittable: [Int] = []
        for W in sizes {
            var cw = c
            if scaleBatch {
                let unit = cw.train.microBatch * W
                cw.train.globalBatch = (cw.train.globalBatch + unit - 1) / unit * unit
            } else {
                do { try cw.fitMicroBatch(worldSize: W) } catch where !listed { unsplittable.append(W); continue }
            }
            var row = ClusterEstimate(cw, worldSize: W,
                                      expertParallel: expertParallel ?? ClusterEstimate.defaultExpertParallel(cw, worldSize: W))
            if let gbps = linkGbps {
                row.link = LinkProjection(row, config: cw, linkGbps: gbps, latencyMs: latencyMs, ranksPerNode: ranksPerNode)
            }
            rows.append(row)
        }
        guard !rows.isEmpty else {
            throw UserError("train.global_batch \(c.train.globalBatch) cannot be split over any of the world sizes "
                            + sizes.map(String.init).joined(separator: ", ") + "; add --scale-batch or a larger train.global_batch")
        }
        return (rows, unsplittable)
    }

    func printTable(_ c: RunConfig, vocabSource: String, rows: [ClusterEstimate], unsplittable: [Int]) {
        print("config \(options.config), vocab \(c.model.vocabSize) (\(vocabSource)), "
              + String(format: "%.1fM parameters, %.1f MFLOP/token", Double(rows[0].totalParameters) / 1e6,
                       rows[0].flopsPerToken / 1e6))
        print(scaleBatch ? "batch: train.micro_batch \(c.train.microBatch) per rank, global batch grown to a multiple of micro_batch × ranks (--scale-batch)"
                         : "batch: train.global_batch \(c.train.globalBatch), micro-batch fitted per world size (largest <= \(c.train.microBatch))")
        print(String(format: "%6@ %4@ %6@ %5@ %9@ %10@ %10@ %10@ %12@ %12@", "ranks", "G", "batch", "micro", "params/rk",
                     "optim GB", "activ GB", "total GB", "a2a MB/rk", "allred MB/rk"))
        for r in rows {
            print(String(format: "%6d %4d %6d %5d %8.1fM %10.3f %10.3f %10.3f %12.1f %12.1f", r.worldSize, r.expertParallel,
                         r.globalBatch, r.microBatch, Double(r.parametersPerRank) / 1e6,
                         Double(r.memory.gradientBytes + r.memory.optimizerBytes) / 1e9,
                         Double(r.memory.activationBytes + r.memory.scratchBytes) / 1e9,
                         Double(r.memory.totalBytes) / 1e9, r.allToAllBytesPerRank / 1e6,
                         r.allReduceRingBytesPerRank / 1e6))
        }
        if !unsplittable.isEmpty {
            print("not shown: " + unsplittable.map(String.init).joined(separator: ", ")
                  + " ranks (train.global_batch \(c.train.globalBatch) cannot be split over them; --scale-batch grows it)")
        }
        if let gbps = linkGbps { printLinks(rows, gbps: gbps) }
    }

    func printLinks(_ rows: [ClusterEstimate], gbps: Double) {
        print(String(format: "communication per step over %g Gbit/s links, %g ms one-way, %d rank(s) per node "
                     + "(traffic inside a node not counted):", gbps, latencyMs, ranksPerNode))
        print(String(format: "%6@ %5@ %12@ %12@ %10@ %10@ %10@", "ranks", "nodes", "a2a MB/node", "allred MB/nd",
                     "a2a s", "allred s", "comm s"))
        for r in rows {
            guard let l = r.link else { continue }
            print(String(format: "%6d %5d %12.1f %12.1f %10.4f %10.4f %10.4f", r.worldSize, l.nodes,
                         l.allToAllLinkBytesPerNode / 1e6, l.allReduceLinkBytesPerNode / 1e6,
                         l.allToAllSeconds, l.allReduceSeconds, l.communicationSeconds))
        }
    }
}

struct EstimateOutput: Encodable {
    var config: String
    var vocabSize: Int
    var vocabSizeSource: String
    /// "fit_micro_batch" (train's rule) or "scale_batch" (--scale-batch).
    var batchRule: String
    /// World sizes left out because train.global_batch cannot be split over them.
    var unsplittableWorldSizes: [Int]
    var formulas: [String: String]
    var estimates: [ClusterEstimate]

    static let formulaText: [String: String] = [
        "tokens_per_rank_per_step": "M * micro_batch * T, M = global_batch / (micro_batch * W) micro-steps",
        "parameters_per_rank": "trunk + ceil(E/G) * (params of one expert over all pools)",
        "memory.parameter_bytes": "4 * parameters_per_rank",
        "memory.gradient_bytes": "4 * parameters_per_rank",
        "memory.optimizer_bytes": "8 * parameters_per_rank (AdamW m and v)",
        "memory.activation_bytes": "4 * (R * [8Nd + 2N + B*H*T^2 + 2NE + N + 4Nk + Nkd + Xd + X*F*m] + 2Nd + 2N + NV), "
            + "N = micro_batch*T, X = N*k expert rows received, m = 2 (gelu) or 3 (swiglu)",
        "memory.scratch_bytes": "4 * (6Nd + T^2 + Nkd + 3Xd + X*F*m + Nk + NE) + packed expert weights "
            + "4 * (S * m * max(d*ceil64(F), F*ceil64(d)) + 16), S = E if G = 1 else ceil(E/G) + 4 "
            + "(+ 0 with parallel.balance_experts false); nodes with AVX-512, moe.experts shared",
        "flops_per_token": "6*(R*(4d^2 + d*E + k*m*d*F) + d*V) + 6*R*T*d",
        "flops_per_rank_per_step": "flops_per_token * tokens_per_rank_per_step",
        "all_to_all_bytes_per_rank": "16 * M * R * N * k * d * (G-1)/G (4 exchanges per MoE use: dispatch, combine, "
            + "and their backward mirrors; float32; balanced routing; bytes sent = bytes received)",
        "all_reduce_trunk_bytes": "4 * trunk parameters (over the world, once per step)",
        "all_reduce_expert_bytes": "4 * expert parameters per rank (over the W/G replicas; 0 when W = G)",
        "all_reduce_stats_bytes": "8 * (E + 2 + k*E) * M * R (routing statistics, float64)",
        "all_reduce_ring_bytes_per_rank": "sum over buffers of 2 * S * (n-1)/n, n the ranks of the reduction",
        "link": LinkProjection.formula,
    ]
}

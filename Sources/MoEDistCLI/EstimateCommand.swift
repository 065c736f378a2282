import Foundation
import ArgumentParser
import Configuration
import DataPipeline
import Model

struct EstimateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "estimate",
        abstract: "Project a configuration to W ranks: memory per rank, FLOPs per token, communication bytes per step.",
        discussion: """
        Examples:
          moe-dist estimate --config jobs/configs/seed-reference.yaml --world 64 --expert-parallel 32 --json
          moe-dist estimate --config jobs/configs/seed-reference.yaml --world 8,16,32 --json
          moe-dist estimate --config jobs/configs/seed-reference.yaml --table

        Weak scaling: each rank keeps train.micro_batch sequences per micro-step; the global batch is
        train.global_batch when ranks · micro_batch divides it, else ranks · micro_batch. The expert group
        (--expert-parallel, G) defaults to parallel.expert_parallel when it fits, else to the largest divisor
        of the world size that is at most moe.num_experts. With model.vocab_size 0 the vocabulary comes from
        data.train when that file exists, else 8192 is assumed (say model.vocab_size=N to choose).
        Formulas (see ClusterEstimate.swift and MemoryEstimate.swift, and the "formulas" field of the JSON):
          all-to-all bytes sent per rank per step = 16 · M · R · N · k · d · (G−1)/G
          all-reduce buffers per step: 4 · trunk params (world), 4 · expert params per rank (W/G replicas),
          8 · (E + 2 + k·E) · M · R routing statistics; ring traffic per rank 2 · S · (n−1)/n.
        """)

    @OptionGroup var options: RunOptions

    @Option(help: ArgumentHelp("World size, or a comma-separated list of world sizes.", valueName: "N[,N...]"))
    var world: String?

    @Option(help: ArgumentHelp("Ranks per expert group G (must divide every world size).", valueName: "G"))
    var expertParallel: Int?

    @Flag(help: "World sizes 8, 16, 32, ..., 1024.")
    var table = false

    @Flag(help: "Print JSON (snake_case keys).")
    var json = false

    var worlds: [Int] {
        get throws {
            if table { return (3 ... 10).map { 1 << $0 } }
            guard let w = world else { throw ValidationError("give --world N[,N...] or --table") }
            let parts = w.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
            guard !parts.isEmpty, parts.allSatisfy({ ($0 ?? 0) >= 1 }) else {
                throw ValidationError("--world: expected positive integers separated by commas, got '\(w)'")
            }
            return parts.map { $0! }
        }
    }

    func validate() throws {
        let ws = try worlds
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
            var vocabSource = "model.vocab_size"
            if c.model.vocabSize == 0 {
                if let path = c.data.train, FileManager.default.fileExists(atPath: path) {
                    c.model.vocabSize = try TokenFile(path: path).vocabSize
                    vocabSource = "data.train (\(path))"
                } else {
                    c.model.vocabSize = 8192
                    vocabSource = "assumed 8192 (model.vocab_size is 0 and data.train is absent)"
                }
            }
            if let g = expertParallel, !c.moe.isDense, g > c.moe.numExperts {
                throw UserError("--expert-parallel: \(g) exceeds moe.num_experts = \(c.moe.numExperts)")
            }
            let rows = try worlds.map { W in
                ClusterEstimate(c, worldSize: W, expertParallel: expertParallel ?? ClusterEstimate.defaultExpertParallel(c, worldSize: W))
            }
            if json {
                let out = EstimateOutput(config: options.config, vocabSize: c.model.vocabSize, vocabSizeSource: vocabSource,
                                         formulas: EstimateOutput.formulaText, estimates: rows)
                let enc = JSONEncoder()
                enc.keyEncodingStrategy = .convertToSnakeCase
                enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                print(String(data: try enc.encode(out), encoding: .utf8)!)
            } else {
                print("config \(options.config), vocab \(c.model.vocabSize) (\(vocabSource)), "
                      + String(format: "%.1fM parameters, %.1f MFLOP/token", Double(rows[0].totalParameters) / 1e6,
                               rows[0].flopsPerToken / 1e6))
                print(String(format: "%6@ %4@ %6@ %9@ %10@ %10@ %10@ %12@ %12@", "ranks", "G", "batch", "params/rk",
                             "optim GB", "activ GB", "total GB", "a2a MB/rk", "allred MB/rk"))
                for r in rows {
                    print(String(format: "%6d %4d %6d %8.1fM %10.3f %10.3f %10.3f %12.1f %12.1f", r.worldSize, r.expertParallel,
                                 r.globalBatch, Double(r.parametersPerRank) / 1e6,
                                 Double(r.memory.gradientBytes + r.memory.optimizerBytes) / 1e9,
                                 Double(r.memory.activationBytes + r.memory.scratchBytes) / 1e9,
                                 Double(r.memory.totalBytes) / 1e9, r.allToAllBytesPerRank / 1e6,
                                 r.allReduceRingBytesPerRank / 1e6))
                }
            }
        }
    }
}

struct EstimateOutput: Encodable {
    var config: String
    var vocabSize: Int
    var vocabSizeSource: String
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
        "memory.scratch_bytes": "4 * (6Nd + T^2 + Nkd + 3Xd + X*F*m + Nk + NE)",
        "flops_per_token": "6*(R*(4d^2 + d*E + k*m*d*F) + d*V) + 6*R*T*d",
        "flops_per_rank_per_step": "flops_per_token * tokens_per_rank_per_step",
        "all_to_all_bytes_per_rank": "16 * M * R * N * k * d * (G-1)/G (4 exchanges per MoE use: dispatch, combine, "
            + "and their backward mirrors; float32; balanced routing; bytes sent = bytes received)",
        "all_reduce_trunk_bytes": "4 * trunk parameters (over the world, once per step)",
        "all_reduce_expert_bytes": "4 * expert parameters per rank (over the W/G replicas; 0 when W = G)",
        "all_reduce_stats_bytes": "8 * (E + 2 + k*E) * M * R (routing statistics, float64)",
        "all_reduce_ring_bytes_per_rank": "sum over buffers of 2 * S * (n-1)/n, n the ranks of the reduction",
    ]
}

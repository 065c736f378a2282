import Foundation
import ArgumentParser
import Configuration
import DataPipeline
import Model
import Training

struct GradCheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gradcheck",
        abstract: "Finite-difference check of every parameter tensor's gradient (one rank).",
        discussion: reflow("""
        Runs one micro-batch of the configured model at world size 1 and compares, for every parameter
        tensor, the analytic directional derivative with central finite differences of the loss
        (CE + aux + z), with the routing decisions at θ replayed in the perturbed passes. Prints the relative error per tensor; exits 1 if any exceeds --tolerance.
        Use small models (jobs/configs/tiny.yaml). --variants repeats the check for every architecture
        variant (shared/indexed trunk and experts, dense, swiglu, top-1, ...) on top of the given configuration.
        Example:
          moe-dist debug gradcheck --config jobs/configs/tiny.yaml --variants
        """))

    @OptionGroup var options: RunOptions

    @Option(help: "Largest relative error accepted per tensor.")
    var tolerance: Double = 5e-3

    @Option(help: "Sequences in the checked micro-batch.")
    var batch: Int = 2

    @Flag(help: "Check every variant: trunk/experts shared and indexed, dense, swiglu, top-1, top-k = E, capacity drops, untied head, no depth embedding, unnormalised gates.")
    var variants = false

    static let variantOverrides: [(String, [String])] = [
        ("as configured", []),
        ("trunk indexed", ["model.trunk=indexed"]),
        ("experts indexed", ["moe.experts=indexed"]),
        ("dense gelu", ["moe.num_experts=0"]),
        ("dense swiglu", ["moe.num_experts=0", "moe.activation=swiglu"]),
        ("swiglu experts", ["moe.activation=swiglu"]),
        ("top-1", ["moe.top_k=1"]),
        ("top-k = E", ["moe.top_k=${E}"]),
        ("unnormalised gates", ["moe.normalize_gates=false"]),
        ("capacity 0.5", ["moe.capacity_factor=0.5"]),
        ("untied head", ["model.tie_embeddings=false"]),
        ("no depth embedding", ["model.depth_embedding=false"]),
        ("z-loss", ["moe.z_loss_coef=0.01"]),
        ("sigmoid scores", ["moe.router_score=sigmoid", "moe.z_loss_coef=0.01"]),
        ("sigmoid top-1", ["moe.router_score=sigmoid", "moe.top_k=1"]),
        ("sequence aux", ["moe.aux_scope=sequence", "moe.aux_loss_coef=0.1"]),
        ("sigmoid, sequence aux, capacity", ["moe.router_score=sigmoid", "moe.aux_scope=sequence", "moe.capacity_factor=0.5"]),
        ("per-iteration routers", ["moe.routers=per_iteration"]),
        ("per-iteration routers, sigmoid, bias", ["moe.routers=per_iteration", "moe.router_score=sigmoid",
                                                 "moe.router_bias_rate=0.01"]),
        ("selection bias", ["moe.router_bias_rate=0.01"]),
    ]

    func run() throws {
        try failingCleanly {
            Launch.configureBLASThreads()
            var failed = 0
            let list = variants ? Self.variantOverrides : [("as configured", [])]
            let baseExperts = try options.load().moe.numExperts
            for (name, variantExtra) in list {
                if variantExtra.contains("moe.top_k=${E}") && baseExperts == 0 { continue }
                let extra = variantExtra.map { $0.replacingOccurrences(of: "${E}", with: "\(baseExperts)") }
                var opts = options
                opts.overrides += extra
                let (config, data, _) = try Launch.resolve(opts, worldSize: 1)
                let model = RecurrentMoEModel(config: config, ctx: .single(numExperts: max(config.moe.numExperts, 1)))
                let T = config.model.seqLen
                var window = [Int32](repeating: 0, count: batch * T + 1)
                window.withUnsafeMutableBufferPointer { data.train.copyTokens(0 ..< batch * T + 1, into: $0.baseAddress!) }
                let rows = GradientCheck.run(model: model, inputs: Array(window[0 ..< batch * T]),
                                             targets: Array(window[1 ... batch * T]), B: batch, T: T)
                print("== \(name) \(extra.joined(separator: " "))")
                for r in rows {
                    let ok = r.relativeError <= tolerance
                    if !ok { failed += 1 }
                    print(String(format: "  %-24@ analytic %+.6e  numeric %+.6e  rel %.2e  %@",
                                 r.path as NSString, r.analytic, r.numeric, r.relativeError, ok ? "ok" : "FAIL"))
                }
                let worst = rows.map(\.relativeError).max() ?? 0
                print(String(format: "  worst relative error %.2e (tolerance %.0e)", worst, tolerance))
            }
            if failed > 0 { throw UserError("gradient check failed for \(failed) tensor(s)", status: 1) }
            print("gradient check passed")
        }
    }
}

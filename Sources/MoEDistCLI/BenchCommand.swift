import Foundation
import ArgumentParser
import Collectives
import Configuration
import Kernels
import Model
import Experiments
import Training

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure training throughput, MFU against the measured sgemm peak, the time split and peak memory.",
        discussion: reflow("""
        Examples:
          moe-dist bench --config jobs/configs/bench.yaml --json
          mpirun -np 2 moe-dist bench --config jobs/configs/bench.yaml --steps 10
          moe-dist bench --config jobs/configs/seed-reference.yaml train.max_steps=null

        Measures in this process the sgemm peak (median of 5 calls, best square size; all ranks at once, and
        as many single-thread products at once as the rank has threads when that is faster) of the OpenBLAS
        kernel set in use and of every set the library offers for this CPU's vector extensions, then trains
        --warmup plus --steps steps of the configuration (no checkpoints, no evaluation, nothing written) and
        reports, on rank 0: the kernel set and why it runs, tokens/s, model FLOPs per token, MFU against the
        best set's peak (and against the set in use), the per-phase time split, the communication share, the
        time ranks wait for a slower one before a collective (measured apart from the transfer), how often
        a busy rank lent experts to an idle one (parallel.balance_experts) and peak resident memory against
        the analytic estimate. The step budget is --warmup + --steps whatever
        train.max_steps says (a configuration without a budget is fine). The micro-batch is fitted to the
        world by the same rule as train (the largest that divides train.global_batch / ranks; one line says so).
        """))

    @OptionGroup var options: RunOptions

    @Option(help: ArgumentHelp("Measured training steps.", valueName: "N"))
    var steps: Int = 10

    @Option(help: ArgumentHelp("Unmeasured steps first.", valueName: "N"))
    var warmup: Int = 2

    @Flag(help: "Print the report as one JSON object (snake_case keys).")
    var json = false

    func validate() throws {
        guard steps >= 1 else { throw ValidationError("--steps: must be at least 1, got \(steps)") }
        guard warmup >= 0 else { throw ValidationError("--warmup: must be >= 0, got \(warmup)") }
    }

    func run() throws {
        try failingCleanly {
            try Launch.onEveryRank(emulateRanks: nil) { world in
                let (config, data, batchNote) = try Launch.agreeing(world) {
                    var opts = options
                    opts.overrides = options.overrides + budgetOverrides(try options.load())
                    return try Launch.resolve(opts, worldSize: world.size, rank: world.rank, command: "bench")
                }
                if world.rank == 0, let note = batchNote { printError(note) }
                Launch.watchCollectives(world, timeout: config.parallel.collectiveTimeout)
                let ctx = try ParallelContext.make(world: world, config: config)
                let report = try Benchmark.run(config: config, configPath: options.config, ctx: ctx, data: data,
                                               warmup: warmup, steps: steps)
                guard world.rank == 0 else { return }
                if json {
                    let enc = JSONEncoder()
                    enc.keyEncodingStrategy = .convertToSnakeCase
                    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
                    print(String(data: try enc.encode(report), encoding: .utf8)!)
                } else {
                    print(BenchCommand.text(report))
                }
                fflush(stdout)
            }
        }
    }

    /// The benchmark sets its own step budget (--warmup + --steps), so a configuration without
    /// train.max_steps or train.max_tokens (e.g. a bare model description) is accepted.
    func budgetOverrides(_ c: RunConfig) -> [String] {
        c.train.maxSteps == nil && c.train.maxTokens == nil ? ["train.max_steps=\(warmup + steps)"] : []
    }

    static func text(_ r: BenchmarkReport) -> String {
        func gb(_ b: Int) -> String { String(format: "%.2f GB", Double(b) / 1e9) }
        var lines = [
            "config \(r.config), \(r.worldSize) rank\(r.worldSize == 1 ? "" : "s") x \(r.blasThreadsPerRank) thread\(r.blasThreadsPerRank == 1 ? "" : "s"), \(r.cores) cores",
            "CPU \(r.cpu)",
            "BLAS kernels \(r.blasCoreName): \(r.blasKernelReason); element-wise kernels \(r.vectorKernels); expert products \(r.expertProducts)",
            String(format: "sgemm peak (%@): %.1f GFLOP/s 1 thread, %.1f GFLOP/s %@%@; machine peak %.1f GFLOP/s",
                   r.blasCoreName, r.sgemm.singleThread, r.sgemm.allThread,
                   r.sgemm.threads == 1 ? "1 thread" : "\(r.sgemm.threads) threads",
                   r.sgemm.threads == 1 ? "" : String(format: ", %.1f GFLOP/s %d single-thread products at once",
                                                      r.sgemm.concurrentSingleThread, r.sgemm.threads),
                   r.machinePeakGflops),
            "machine peak by kernel set: " + r.kernelSetPeaks.map { String(format: "%@ %.1f", $0.name, $0.machineGflops) }
                .joined(separator: ", ") + String(format: " GFLOP/s; best %@ %.1f", r.bestKernelSet, r.bestMachinePeakGflops),
            String(format: "step %.3f s (min %.3f) | %.0f tokens/s | %.1f MFLOP/token | %.1f GFLOP/s | MFU %.1f%% of the best set (%.1f%% of the set in use)",
                   r.stepTimeSeconds, r.stepTimeMin, r.tokensPerSecond, r.flopsPerToken / 1e6, r.modelGflops, 100 * r.mfu,
                   100 * r.mfuInUse),
            "time split (rank 0): " + r.timeSplitFraction.sorted { $0.value > $1.value }
                .map { String(format: "%@ %.1f%%", $0.key, 100 * $0.value) }.joined(separator: ", "),
            String(format: "communication %.1f%% of the step, waiting for slower ranks %.1f%% (max over ranks); "
                   + "per step (median of %d): all-to-all %.4f s, all-reduce %.4f s",
                   100 * r.communicationFraction, 100 * r.rankWaitFraction, r.steps,
                   r.communicationMedianSeconds["all_to_all"] ?? 0, r.communicationMedianSeconds["all_reduce"] ?? 0),
            !r.expertLending ? "expert lending: none (\(r.worldSize == 1 ? "one rank" : "parallel.balance_experts=false, a dense model, or one rank per expert group"))"
                : String(format: "expert lending: %d of %d MoE uses lent experts, %.2f per use; helpers ran %.1f%% of the expert rows",
                         r.lendingUsesWithLoans, r.lendingUses, r.loansPerUse, 100 * r.rowsLentFraction),
            "peak memory \(gb(r.peakResidentBytes)) (baseline \(gb(r.baselineResidentBytes))), estimate \(gb(r.estimatedTotalBytes))"
                + String(format: " -> %.2fx", r.peakOverEstimate),
        ]
        lines.append(String(format: "MFU at the fastest step %.1f%% | %.2f CPU s per step", 100 * r.mfuBestStep, r.cpuSecondsPerStep))
        lines.append("load average " + r.loadAverageStart.map { String(format: "%.2f", $0) }.joined(separator: " ")
                     + " at the start, " + r.loadAverageEnd.map { String(format: "%.2f", $0) }.joined(separator: " ") + " at the end")
        lines.append(String(format: "final loss %.4f", r.finalLoss))
        return lines.joined(separator: "\n")
    }
}

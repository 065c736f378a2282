// `moe-dist compare`: one row per run with what the research notes track (quality, efficiency,
// MoE health, stability), read from each RUN_DIR/metrics.h5 (which is all a run directory needs).
import Foundation
import ArgumentParser
import Experiments
import Training

struct CompareCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Compare runs: eval loss/ppl at equal steps and tokens, tokens/s, time to a target loss, routing, stability.",
        discussion: reflow("""
        Equal steps: the largest eval step every run reached (each run's last eval at or before it);
        equal tokens: the same with tokens seen. "Final" values are means over the last evaluation interval
        (train/expert rows after the previous eval step). Columns: eval loss and ppl at equal steps and at
        equal tokens; last eval; tokens/s over the run (median of the logged intervals, with the quartiles); wall-clock (sum of step times) to the first
        eval <= --target-loss (default: the worst run's final eval loss, so every run reaches it); final
        aux; final entropy, min and max load (means over iterations; 1 = even) and the max load of the worst
        iteration (the iteration whose mean max load over the final interval is highest, with its index);
        the top expert (index,
        share of assignments over the final interval); token drops (dropped assignments, and their
        fraction of all assignments); final and largest grad norm; NaN events (cumulative).
        Replicates (runs equal but for name, train.seed and train.data_seed) are grouped into arms: n, mean,
        sd and standard error of eval loss and ppl (equal steps, equal tokens), tokens/s, time to target and
        the worst iteration's max load (an arm of one run shows its value, no spread); an arm whose runs have
        different names (a reference equal to a sweep arm) is named by all of them and a note says so;
        with --reference (repeatable: the reference's replicates) also each
        arm's difference to the reference with its standard error (pooled variance). --json adds "arms".
        Directories given that hold no run (no metrics.h5, such as a figures directory matched by a glob)
        are skipped with a note; a missing directory is an error.
        Examples:
          moe-dist compare sweeps/s1/runs/p1-* sweeps/s1/runs/reference-phase-1
          moe-dist compare runs/tiny runs/tiny-threads --json
        --json: {"equal_step": S, "equal_tokens": N, "target_loss": x, "runs": [{...}]} with the keys of each row.
        """))

    @Argument(help: ArgumentHelp("Run directories.", valueName: "run-dir"))
    var runs: [String]

    @Option(help: ArgumentHelp("Target eval loss for wall-clock to target (default: the worst final eval loss).", valueName: "x"))
    var targetLoss: Double?

    @Flag(help: "Print one JSON object.")
    var json = false

    @Option(help: ArgumentHelp("The reference arm: a run directory (repeat it for its replicates); each arm's difference to it is reported with its standard error.",
                               valueName: "run-dir"))
    var reference: [String] = []

    func validate() throws { if runs.isEmpty { throw ValidationError("give at least one run directory") } }

    /// The statistics reported per arm of replicates (keys of a run's row).
    static let armStatistics = ["eval_loss_at_equal_steps", "eval_ppl_at_equal_steps", "eval_loss_at_equal_tokens",
                                "eval_ppl_at_equal_tokens", "tokens_per_sec", "seconds_to_target", "worst_iteration_max_load"]

    /// Arms of replicates (runs equal but for name and seeds): per statistic n, mean, sd and standard error over
    /// the arm's runs, and, given a reference arm, the difference of the means and its standard error
    /// (Replicates.swift: pooled variance).
    static func arms(_ records: [RunRecord], rows: [[String: Any]], reference: [[String: Any]]) -> [[String: Any]] {
        let indexed = Array(zip(records, rows))
        return Replicates.arms(indexed) { $0.0.config }.map { arm -> [String: Any] in
            // One configuration can be run under different names (a reference and the sweep arm equal to it):
            // the arm lists them all, so the table does not hide that it merged them.
            var names: [String] = []
            for n in arm.map({ Replicates.stem($0.0.config.name) }) where !names.contains(n) { names.append(n) }
            var o: [String: Any] = ["arm": Replicates.armName(arm.map(\.0.config.name)), "n": arm.count,
                                    "names": names, "run_dirs": arm.map(\.0.directory)]
            for key in armStatistics {
                let values = arm.compactMap { $0.1[key] as? Double }
                guard !values.isEmpty else { o[key] = NSNull(); continue }
                let s = ReplicateSummary(values)
                var stat: [String: Any] = ["n": s.n, "mean": s.mean, "sd": s.sd, "se": s.se]
                let refValues = reference.compactMap { $0[key] as? Double }
                if !refValues.isEmpty {
                    let d = ReplicateDifference(s, ReplicateSummary(refValues))
                    stat["difference_to_reference"] = d.difference
                    stat["difference_standard_error"] = jsonNumber(d.standardError)
                }
                o[key] = stat
            }
            return o
        }
    }

    /// Whether `dir` is an existing directory with nothing of a run in it (no metrics.h5, config.yaml, train.log or
    /// checkpoints/), such as the figures directory a notebook wrote next to the runs: a glob over runs matches it.
    static func holdsNoRun(_ dir: String) -> Bool {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else { return false }
        return !["metrics.h5", "config.yaml", "train.log", "checkpoints"].contains {
            FileManager.default.fileExists(atPath: dir + "/" + $0)
        }
    }

    static func mean(_ a: [Double]) -> Double? { a.isEmpty ? nil : a.reduce(0, +) / Double(a.count) }

    /// The row of one run (keys as in the JSON).
    static func row(_ r: RunRecord, equalStep: Int64?, equalTokens: Int64?, target: Double?) -> [String: Any] {
        let m = r.metrics
        var o: [String: Any] = ["run_dir": r.directory, "name": r.config.name]
        o["last_step"] = jsonNumber(m.trainStep.last.map(Int.init))
        o["tokens"] = jsonNumber(m.trainTokens.last.map(Int.init))
        func evalAt(_ key: [Int64], _ limit: Int64?) -> Int? {
            guard let limit else { return nil }
            return key.lastIndex { $0 <= limit }
        }
        let iStep = evalAt(m.evalStep, equalStep), iTok = evalAt(m.evalTokens, equalTokens)
        o["eval_step_at_equal_steps"] = jsonNumber(iStep.map { Int(m.evalStep[$0]) })
        o["eval_loss_at_equal_steps"] = jsonNumber(iStep.map { m.evalLoss[$0] })
        o["eval_ppl_at_equal_steps"] = jsonNumber(iStep.map { m.evalPPL[$0] })
        o["eval_tokens_at_equal_tokens"] = jsonNumber(iTok.map { Int(m.evalTokens[$0]) })
        o["eval_loss_at_equal_tokens"] = jsonNumber(iTok.map { m.evalLoss[$0] })
        o["eval_ppl_at_equal_tokens"] = jsonNumber(iTok.map { m.evalPPL[$0] })
        o["last_eval_step"] = jsonNumber(m.evalStep.last.map(Int.init))
        o["last_eval_loss"] = jsonNumber(m.evalLoss.last)
        o["last_eval_ppl"] = jsonNumber(m.evalPPL.last)
        // tokens/s: median and quartiles of the logged intervals (RunStatistics.swift, docs/statistics.md).
        let speed = SpreadSummary(m.trainTokensPerSec.filter { $0 > 0 })
        o["tokens_per_sec"] = jsonNumber(speed?.median)
        o["tokens_per_sec_q25"] = jsonNumber(speed?.q25)
        o["tokens_per_sec_q75"] = jsonNumber(speed?.q75)
        // Wall-clock: each train row covers (previous row's step, its step] at its mean step time.
        var wall: Double? = nil
        if let target, let i = m.evalLoss.firstIndex(where: { $0 <= target }) {
            let s = m.evalStep[i]
            var t = 0.0, prev: Int64 = 0
            for j in m.trainStep.indices where m.trainStep[j] <= s {
                t += m.trainStepTime[j] * Double(m.trainStep[j] - prev); prev = m.trainStep[j]
            }
            wall = t
            o["step_at_target"] = Int(s)
        } else { o["step_at_target"] = NSNull() }
        o["seconds_to_target"] = jsonNumber(wall)
        // Final interval: rows after the previous eval step.
        let from: Int64 = m.evalStep.count >= 2 ? m.evalStep[m.evalStep.count - 2] : Int64.min
        let ti = m.trainStep.indices.filter { m.trainStep[$0] > from }
        o["aux"] = jsonNumber(mean(ti.map { m.trainAux[$0] }))
        o["grad_norm"] = jsonNumber(mean(ti.map { m.trainGradNorm[$0] }))
        o["max_grad_norm"] = jsonNumber(m.trainGradNorm.max())
        o["nan_events"] = jsonNumber(m.trainNaNEvents.last.map(Int.init))
        let R = m.iterations, E = m.numExperts
        if R > 0 && E > 0 {
            let xi = m.expertStep.indices.filter { m.expertStep[$0] > from }
            func rowMean(_ a: [Double]) -> Double? { mean(xi.flatMap { a[$0 * R ..< ($0 + 1) * R] }) }
            o["entropy"] = jsonNumber(rowMean(m.entropy))
            o["min_load"] = jsonNumber(rowMean(m.minLoad))
            o["max_load"] = jsonNumber(rowMean(m.maxLoad))
            // Per iteration: a collapse in one iteration hides in the mean over iterations.
            let perIteration = (0 ..< R).map { r in mean(xi.map { m.maxLoad[$0 * R + r] }) ?? 0 }
            if !xi.isEmpty, let worst = perIteration.indices.max(by: { perIteration[$0] < perIteration[$1] }) {
                o["worst_iteration"] = worst
                o["worst_iteration_max_load"] = perIteration[worst]
            } else { o["worst_iteration"] = NSNull(); o["worst_iteration_max_load"] = NSNull() }
            var perExpert = [Int64](repeating: 0, count: E)
            for i in xi { for k in 0 ..< R * E { perExpert[k % E] += m.counts[i * R * E + k] } }
            let total = perExpert.reduce(0, +)
            if total > 0, let top = perExpert.indices.max(by: { perExpert[$0] < perExpert[$1] }) {
                o["top_expert"] = top
                o["top_expert_share"] = Double(perExpert[top]) / Double(total)
            } else { o["top_expert"] = NSNull(); o["top_expert_share"] = NSNull() }
            let dropped = m.dropped.reduce(0, +), assigned = m.counts.reduce(0, +)
            o["dropped"] = Int(dropped)
            o["drop_fraction"] = assigned > 0 ? Double(dropped) / Double(assigned) : 0.0
        } else {
            for k in ["entropy", "min_load", "max_load", "worst_iteration", "worst_iteration_max_load", "top_expert", "top_expert_share", "dropped", "drop_fraction"] { o[k] = NSNull() }
        }
        o["stopped_step"] = jsonNumber(m.stoppedStep)
        return o
    }

    func run() throws {
        try failingCleanly {
            let given = runs.filter { dir in
                guard Self.holdsNoRun(dir) else { return true }
                FileHandle.standardError.write(Data("compare: skipping \(dir): a directory with no run in it (no metrics.h5)\n".utf8))
                return false
            }
            if given.isEmpty { throw DataError("none of the directories given holds a run (a metrics.h5): \(runs.joined(separator: " "))") }
            let records = try given.map { try RunRecord.load($0) }
            let lastSteps = records.map { $0.metrics.evalStep.last }
            let lastTokens = records.map { $0.metrics.evalTokens.last }
            let equalStep = lastSteps.contains(where: { $0 == nil }) ? nil : lastSteps.map { $0! }.min()
            let equalTokens = lastTokens.contains(where: { $0 == nil }) ? nil : lastTokens.map { $0! }.min()
            let target = targetLoss ?? records.compactMap { $0.metrics.evalLoss.last }.max()
            let rows = records.map { Self.row($0, equalStep: equalStep, equalTokens: equalTokens, target: target) }
            let refRows = try reference.map { Self.row(try RunRecord.load($0), equalStep: equalStep, equalTokens: equalTokens, target: target) }
            let arms = Self.arms(records, rows: rows, reference: refRows)
            if json {
                print(jsonText(["equal_step": jsonNumber(equalStep.map(Int.init)), "equal_tokens": jsonNumber(equalTokens.map(Int.init)),
                                "target_loss": jsonNumber(target), "runs": rows, "arms": arms,
                                "reference_runs": reference], pretty: true))
                return
            }
            func f(_ v: Any?, _ fmt: String) -> String {
                if let d = v as? Double { return String(format: fmt, d) }
                if let i = v as? Int { return "\(i)" }
                return "-"
            }
            print("equal steps: \(equalStep.map { "\($0)" } ?? "-"), equal tokens: \(equalTokens.map { "\($0)" } ?? "-"), "
                  + "target loss: \(target.map { String(format: "%.4f", $0) } ?? "-")")
            let header = ["run", "loss@step", "ppl@step", "loss@tok", "ppl@tok", "tok/s", "s→target", "aux", "entropy",
                          "min load", "max load", "worst it.", "top", "drops", "grad", "max grad", "NaN"]
            print(header.joined(separator: "\t"))
            for o in rows {
                let cells = [o["run_dir"] as? String ?? "", f(o["eval_loss_at_equal_steps"], "%.4f"), f(o["eval_ppl_at_equal_steps"], "%.3f"),
                             f(o["eval_loss_at_equal_tokens"], "%.4f"), f(o["eval_ppl_at_equal_tokens"], "%.3f"),
                             "\(f(o["tokens_per_sec"], "%.0f")) (\(f(o["tokens_per_sec_q25"], "%.0f"))-\(f(o["tokens_per_sec_q75"], "%.0f")))",
                             f(o["seconds_to_target"], "%.1f"), f(o["aux"], "%.4f"),
                             f(o["entropy"], "%.4f"), f(o["min_load"], "%.3f"), f(o["max_load"], "%.3f"),
                             "\(f(o["worst_iteration_max_load"], "%.3f"))(r\(f(o["worst_iteration"], "%.0f")))",
                             "\(f(o["top_expert"], "%.0f"))(\(f(o["top_expert_share"], "%.3f")))", f(o["dropped"], "%.0f"),
                             f(o["grad_norm"], "%.3f"), f(o["max_grad_norm"], "%.3f"), f(o["nan_events"], "%.0f")]
                print(cells.joined(separator: "\t"))
            }
            // Replicates: one line per arm, mean ± sd over its runs (and the difference to the reference ± its se).
            if arms.contains(where: { ($0["n"] as? Int ?? 1) > 1 }) || !reference.isEmpty {
                print("\narms (mean ± sd over replicates; Δ = arm − reference ± its standard error)")
                print(["arm", "n", "loss@step", "Δ loss@step", "loss@tok", "tok/s", "worst it. max load"].joined(separator: "\t"))
                for a in arms {
                    // One run has no spread: its value alone (n says 1), not "± 0".
                    func ms(_ key: String, _ fmt: String) -> String {
                        guard let s = a[key] as? [String: Any], let m = s["mean"] as? Double else { return "-" }
                        guard (s["n"] as? Int ?? 0) > 1, let sd = s["sd"] as? Double else { return String(format: fmt, m) }
                        return String(format: "\(fmt) ± \(fmt)", m, sd)
                    }
                    var delta = "-"
                    if let s = a["eval_loss_at_equal_steps"] as? [String: Any], let d = s["difference_to_reference"] as? Double {
                        delta = String(format: "%+.4f", d) + ((s["difference_standard_error"] as? Double).map { String(format: " ± %.4f", $0) } ?? "")
                    }
                    let names = a["names"] as? [String] ?? []
                    let arm = names.count > 1 ? names.joined(separator: " = ") : a["arm"] as? String ?? ""
                    print([arm, "\(a["n"] as? Int ?? 0)", ms("eval_loss_at_equal_steps", "%.4f"), delta,
                           ms("eval_loss_at_equal_tokens", "%.4f"), ms("tokens_per_sec", "%.0f"),
                           ms("worst_iteration_max_load", "%.3f")].joined(separator: "\t"))
                }
                for a in arms {
                    if let names = a["names"] as? [String], names.count > 1 {
                        print("note: \(names.joined(separator: ", ")) are one configuration (equal but for name and seeds), "
                              + "so they form one arm: \((a["run_dirs"] as? [String] ?? []).joined(separator: " "))")
                    }
                }
            }
        }
    }
}

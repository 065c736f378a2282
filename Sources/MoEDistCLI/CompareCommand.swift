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

    func run() throws {
        try failingCleanly {
            let given = runs.filter { dir in
                guard Comparison.holdsNoRun(dir) else { return true }
                FileHandle.standardError.write(Data("compare: skipping \(dir): a directory with no run in it (no metrics.h5)\n".utf8))
                return false
            }
            if given.isEmpty { throw DataError("none of the directories given holds a run (a metrics.h5): \(runs.joined(separator: " "))") }
            let records = try given.map { try RunRecord.load($0) }
            let comparison = Comparison(records, reference: try reference.map { try RunRecord.load($0) }, targetLoss: targetLoss)
            let (equalStep, equalTokens, target) = (comparison.equalStep, comparison.equalTokens, comparison.target)
            let rows = comparison.rows, arms = comparison.arms
            if json {
                print(jsonText(["equal_step": jsonNumber(equalStep.map(Int.init)), "equal_tokens": jsonNumber(equalTokens.map(Int.init)),
                                "target_loss": jsonNumber(target), "runs": rows, "arms": arms,
                                "reference_runs": reference], pretty: true))
                return
            }
            print("equal steps: \(equalStep.map { "\($0)" } ?? "-"), equal tokens: \(equalTokens.map { "\($0)" } ?? "-"), "
                  + "target loss: \(target.map { String(format: "%.4f", $0) } ?? "-")")
            Self.printRows(rows)
            // Replicates: one line per arm, mean ± sd over its runs (and the difference to the reference ± its se).
            if arms.contains(where: { ($0["n"] as? Int ?? 1) > 1 }) || !reference.isEmpty { Self.printArms(arms) }
        }
    }

    /// A cell: the number in `fmt`, "-" for null.
    static func cell(_ v: Any?, _ fmt: String) -> String {
        if let d = v as? Double { return String(format: fmt, d) }
        if let i = v as? Int { return "\(i)" }
        return "-"
    }

    static func printRows(_ rows: [[String: Any]]) {
        let f = cell
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
    }

    static func printArms(_ arms: [[String: Any]]) {
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

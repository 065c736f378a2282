// `moe-dist gate`: the stage-gate decision (continue / stop / promote) for each run against a reference.
import Foundation
import ArgumentParser
import Configuration
import Experiments
import Training

struct GateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gate",
        abstract: "Decide continue / stop / promote for runs against a reference run (the notes' stage gates).",
        discussion: reflow("""
        Each run gets one decision:
          promote   the promote rule holds against --reference at the largest eval step both have
                    (eval loss lower by >= gate.promote_margin; or equal within gate.equal_tolerance
                    and better routing balance, or, only when the model FLOPs per token differ,
                    higher tokens/s beyond both runs' step-time spread); else
          stop      the run's trainer stopped it (metrics.h5 root attribute stopped_step) or the stop
                    rule holds at its last evaluation (no eval improvement, flat train loss, routing
                    plateau); else
          continue
        Replicates: runs whose configurations are equal apart from name, train.seed and train.data_seed
        form one arm and get one decision: the arm's mean history is judged, and "better loss" also
        needs the mean improvement to exceed gate.noise_sigmas standard errors of the difference of the
        means (pooled across-seed variance); the stop rule is applied per replicate and voted (more than
        half). Give the reference arm's replicates as repeated --reference options. With one run per arm
        the decisions are the single-run ones.
        Example (the README's Phase 1 by hand):
          moe-dist gate sweeps/s1/runs/p1-* \\
              --reference sweeps/s1/runs/reference-phase-1
        Thresholds come from each run's gate.* in RUN_DIR/config.yaml, or, for a directory that holds only
        metrics.h5 (histories copied back from a cluster), from its config attribute (with config_changes).
        run_dir values are the directories as given; sweep --gate reads relative ones as relative to the
        gate file's directory, or, when no such directory exists, to the working directory.
        --json prints {"reference": "<dir>", "runs": [{"run_dir", "name", "decision", "reason", "step",
        "tokens", "eval_loss", "reference_eval_loss", "last_eval_step", "last_eval_loss", "stopped_step",
        "stop_clauses", "promote_clauses", "arm", "replicates", "reference_replicates", "decided_by",
        "noise": null or {"difference", "standard_error", "pooled_sd", "degrees_of_freedom", "noise_floor"}}],
        "reference_runs": [<dir>...], "promoted": [<dir>...], "best": "<dir of lowest eval_loss>"}.
        step/tokens/eval_loss/reference_eval_loss are at the compared step (null when the runs share no
        eval step; then step/tokens/eval_loss fall back to the run's last eval).
        """))

    @Argument(help: ArgumentHelp("Run directories to decide on.", valueName: "run-dir"))
    var runs: [String]

    @Option(help: ArgumentHelp("The reference run directory (e.g. the control); repeat it for the reference's replicates.",
                               valueName: "run-dir"))
    var reference: [String]

    @Flag(help: "Print one JSON object (the contract used by the Slurm scripts).")
    var json = false

    func validate() throws {
        if runs.isEmpty { throw ValidationError("give at least one run directory") }
        if reference.isEmpty { throw ValidationError("give --reference (the reference run directory)") }
    }

    func run() throws {
        try failingCleanly {
            let refs = try reference.map { try RunRecord.load($0) }
            let records = try runs.map { try RunRecord.load($0) }
            let rows = Replicates.arms(records) { $0.config }.flatMap { StageGate.decide(arm: $0, reference: refs) }
            let promoted = rows.filter { $0.decision == "promote" }.map(\.dir)
            let best = rows.filter { $0.evalLoss != nil }.min { $0.evalLoss! < $1.evalLoss! }?.dir
            if json {
                func clauses(_ c: [GateClause]) -> [[String: Any]] { c.map { ["name": $0.name, "holds": $0.holds, "detail": $0.detail] } }
                let obj: [String: Any] = [
                    "reference": reference[0], "reference_runs": reference,
                    "runs": rows.map { r -> [String: Any] in [
                        "run_dir": r.dir, "name": r.name, "decision": r.decision, "reason": r.reason,
                        "step": jsonNumber(r.step), "tokens": jsonNumber(r.tokens), "eval_loss": jsonNumber(r.evalLoss),
                        "reference_eval_loss": jsonNumber(r.referenceEvalLoss),
                        "last_eval_step": jsonNumber(r.lastEvalStep), "last_eval_loss": jsonNumber(r.lastEvalLoss),
                        "stopped_step": jsonNumber(r.stoppedStep),
                        "stop_clauses": clauses(r.stopClauses), "promote_clauses": clauses(r.promoteClauses),
                        "arm": r.arm, "replicates": r.replicates, "reference_replicates": r.referenceReplicates,
                        "decided_by": r.decidedBy,
                        "noise": r.noise.map { n -> Any in
                            ["difference": n.difference, "standard_error": jsonNumber(n.standardError),
                             "pooled_sd": jsonNumber(n.pooledSD), "degrees_of_freedom": n.degreesOfFreedom,
                             "noise_floor": jsonNumber(n.standardError.map { $0 * r.noiseSigmas })] } ?? NSNull(),
                    ] },
                    "promoted": promoted,
                    "best": best.map { $0 as Any } ?? NSNull(),
                ]
                print(jsonText(obj, pretty: true))
                return
            }
            print("reference: \(reference.joined(separator: " "))")
            for r in rows {
                let loss = r.evalLoss.map { String(format: "%.4f", $0) } ?? "-"
                let refLoss = r.referenceEvalLoss.map { String(format: "%.4f", $0) } ?? "-"
                print("\(r.decision.padding(toLength: 8, withPad: " ", startingAt: 0)) \(r.dir) (\(r.name)) step \(r.step.map(String.init) ?? "-") "
                      + "eval loss \(loss) vs reference \(refLoss)\n         \(r.reason)")
            }
            print("promoted: \(promoted.isEmpty ? "none" : promoted.joined(separator: " "))")
            print("best: \(best ?? "none")")
        }
    }
}

// The table of `moe-dist compare`: one row per run with what the research notes track (quality,
// efficiency, MoE health, stability), read from each run's metrics.h5, and the arms of replicates
// with their spread. Rows and arms are JSON-ready dictionaries (keys as in `compare --json`).
import Foundation
import Training

public struct Comparison {
    /// The largest eval step (tokens) every run reached; nil when a run has no eval.
    public var equalStep: Int64?, equalTokens: Int64?
    /// The eval loss wall-clock to target is measured to.
    public var target: Double?
    public var rows: [[String: Any]]
    public var arms: [[String: Any]]

    /// Compares `records`; `reference` is the reference arm's runs (its rows only enter the arms' differences);
    /// `targetLoss` defaults to the worst final eval loss, so every run reaches it.
    public init(_ records: [RunRecord], reference: [RunRecord], targetLoss: Double?) {
        let lastSteps = records.map { $0.metrics.evalStep.last }
        let lastTokens = records.map { $0.metrics.evalTokens.last }
        equalStep = lastSteps.contains(where: { $0 == nil }) ? nil : lastSteps.map { $0! }.min()
        equalTokens = lastTokens.contains(where: { $0 == nil }) ? nil : lastTokens.map { $0! }.min()
        target = targetLoss ?? records.compactMap { $0.metrics.evalLoss.last }.max()
        let (step, tokens, target) = (equalStep, equalTokens, target)
        rows = records.map { Self.row($0, equalStep: step, equalTokens: tokens, target: target) }
        let refRows = reference.map { Self.row($0, equalStep: step, equalTokens: tokens, target: target) }
        arms = Self.arms(records, rows: rows, reference: refRows)
    }

    /// The statistics reported per arm of replicates (keys of a run's row).
    public static let armStatistics = ["eval_loss_at_equal_steps", "eval_ppl_at_equal_steps", "eval_loss_at_equal_tokens",
                                "eval_ppl_at_equal_tokens", "tokens_per_sec", "seconds_to_target", "worst_iteration_max_load"]

    /// Arms of replicates (runs equal but for name and seeds): per statistic n, mean, sd and standard error over
    /// the arm's runs, and, given a reference arm, the difference of the means and its standard error
    /// (Replicates.swift: pooled variance).
    public static func arms(_ records: [RunRecord], rows: [[String: Any]], reference: [[String: Any]]) -> [[String: Any]] {
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
    public static func holdsNoRun(_ dir: String) -> Bool {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: dir, isDirectory: &isDir), isDir.boolValue else { return false }
        return !["metrics.h5", "config.yaml", "train.log", "checkpoints"].contains {
            FileManager.default.fileExists(atPath: dir + "/" + $0)
        }
    }

    static func mean(_ a: [Double]) -> Double? { a.isEmpty ? nil : a.reduce(0, +) / Double(a.count) }

    /// The row of one run (keys as in the JSON).
    public static func row(_ r: RunRecord, equalStep: Int64?, equalTokens: Int64?, target: Double?) -> [String: Any] {
        let m = r.metrics
        var o: [String: Any] = ["run_dir": r.directory, "name": r.config.name]
        o["last_step"] = jsonNumber(m.trainStep.last.map(Int.init))
        o["tokens"] = jsonNumber(m.trainTokens.last.map(Int.init))
        evalColumns(m, equalStep: equalStep, equalTokens: equalTokens, into: &o)
        speedColumns(m, target: target, into: &o)
        // Final interval: rows after the previous eval step.
        let from: Int64 = m.evalStep.count >= 2 ? m.evalStep[m.evalStep.count - 2] : Int64.min
        let ti = m.trainStep.indices.filter { m.trainStep[$0] > from }
        o["aux"] = jsonNumber(mean(ti.map { m.trainAux[$0] }))
        o["grad_norm"] = jsonNumber(mean(ti.map { m.trainGradNorm[$0] }))
        o["max_grad_norm"] = jsonNumber(m.trainGradNorm.max())
        o["nan_events"] = jsonNumber(m.trainNaNEvents.last.map(Int.init))
        routingColumns(m, after: from, into: &o)
        o["stopped_step"] = jsonNumber(m.stoppedStep)
        return o
    }

    /// Eval loss and ppl at equal steps, at equal tokens, and at the last eval.
    static func evalColumns(_ m: RunMetrics, equalStep: Int64?, equalTokens: Int64?, into o: inout [String: Any]) {
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
    }

    /// tokens/s (median and quartiles) and the wall-clock to the target loss.
    static func speedColumns(_ m: RunMetrics, target: Double?, into o: inout [String: Any]) {
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
    }

    /// Routing over the final interval (rows after step `from`): entropy, loads, the worst iteration, the
    /// top expert, and token drops over the run (null for a dense run).
    static func routingColumns(_ m: RunMetrics, after from: Int64, into o: inout [String: Any]) {
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
    }
}

/// A JSON number, or null for nil and non-finite values.
func jsonNumber(_ x: Double?) -> Any { x.map { $0.isFinite ? $0 as Any : NSNull() } ?? NSNull() }
func jsonNumber(_ x: Int?) -> Any { x.map { $0 as Any } ?? NSNull() }

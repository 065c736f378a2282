// The stage gate's one decision per run (`moe-dist gate`): the promote rule against the reference first,
// then the stop rule (or the trainer's own stop), else continue. Replicates of one arm are judged
// together (StageGateReplicates.swift) and share the arm's decision.
import Configuration
import Model
import Training

/// The gate's decision on one run against the reference, with the figures it was made on.
public struct GateDecision: Sendable {
    public var dir: String, name: String
    /// "promote", "stop" or "continue", and why, in words with the numbers.
    public var decision: String, reason: String
    /// The compared eval step (the largest both have; else the run's last eval) and its figures.
    public var step: Int?, tokens: Int?, evalLoss: Double?, referenceEvalLoss: Double?
    public var lastEvalStep: Int?, lastEvalLoss: Double?, stoppedStep: Int?
    public var stopClauses: [GateClause], promoteClauses: [GateClause]
    /// The arm (replicates) the run belongs to, its size, and the noise figure of the decision.
    public var arm: String, replicates: Int, referenceReplicates: Int
    public var noise: ReplicateDifference?
    public var noiseSigmas: Double
    /// The clauses that decided: the promote clauses that held, "stop rule", "trainer stop", "stop vote",
    /// "noise floor" or "none held".
    public var decidedBy: String
}

public extension StageGate {
    /// One decision for an arm of replicates (one or more runs) against the reference arm, one row per run.
    static func decide(arm: [RunRecord], reference refs: [RunRecord]) -> [GateDecision] {
        if arm.count == 1 && refs.count == 1 { return [decide(arm[0], reference: refs[0])] }
        let g = arm[0].config.gate
        let hs = arm.map(\.costedHistory), rhs = refs.map(\.costedHistory)
        let p = StageGate.promote(replicates: hs, reference: rhs, g)
        // A run its trainer stopped votes for stopping.
        var s = StageGate.stop(replicates: hs, g)
        let trainerStops = arm.filter { $0.metrics.stoppedStep != nil }.count
        if trainerStops > 0 {
            let votes = zip(arm, hs).filter { $0.0.metrics.stoppedStep != nil || StageGate.stop($0.1, g).stop }.count
            s.stop = 2 * votes > arm.count
            s.clauses[0] = GateClause(name: "vote", holds: s.stop,
                                      detail: "\(votes) of \(arm.count) replicates stopped by their trainer or meeting the stop rule")
        }
        let decision = p.promote ? "promote" : s.stop ? "stop" : "continue"
        let reason = p.promote ? p.reason : s.stop ? s.reason : s.reason + "; " + p.reason
        let betterLoss = p.clauses.first { $0.name == "better loss" }
        let decidedBy = p.promote ? p.clauses.filter(\.holds).map(\.name).joined(separator: ", ")
            : (betterLoss?.detail.contains("decided by the noise floor") == true ? "noise floor" : s.stop ? "stop vote" : "none held")
        let armName = Replicates.armName(arm.map(\.config.name))
        return arm.map { run in
            let last = run.metrics.gateHistory.evals.last
            let at = p.step.flatMap { st in run.metrics.gateHistory.evals.last { $0.step == st } } ?? last
            return GateDecision(dir: run.directory, name: run.config.name, decision: decision, reason: reason,
                                step: at?.step, tokens: at?.tokens, evalLoss: at?.loss, referenceEvalLoss: p.referenceEvalLoss,
                                lastEvalStep: last?.step, lastEvalLoss: last?.loss, stoppedStep: run.metrics.stoppedStep,
                                stopClauses: s.clauses, promoteClauses: p.clauses, arm: armName, replicates: arm.count,
                                referenceReplicates: refs.count, noise: p.noise, noiseSigmas: g.noiseSigmas, decidedBy: decidedBy)
        }
    }

    /// The single-run decision: promote against `reference`, else stop (the trainer's or the stop rule's), else continue.
    static func decide(_ run: RunRecord, reference: RunRecord) -> GateDecision {
        let g = run.config.gate
        let h = run.costedHistory
        let p = StageGate.promote(h, reference: reference.costedHistory, g)
        let s = StageGate.stop(h, g)
        let decision: String, reason: String
        if p.promote { decision = "promote"; reason = p.reason }
        else if let st = run.metrics.stoppedStep {
            decision = "stop"; reason = "stopped by the trainer after step \(st): " + (run.metrics.stoppedReason ?? "")
        } else if s.stop { decision = "stop"; reason = s.reason }
        else { decision = "continue"; reason = s.reason + "; " + p.reason }
        let last = h.evals.last
        let at = p.step.flatMap { st in h.evals.last { $0.step == st } } ?? last
        return GateDecision(dir: run.directory, name: run.config.name, decision: decision, reason: reason,
                            step: at?.step, tokens: at?.tokens, evalLoss: at?.loss, referenceEvalLoss: p.referenceEvalLoss,
                            lastEvalStep: last?.step, lastEvalLoss: last?.loss, stoppedStep: run.metrics.stoppedStep,
                            stopClauses: s.clauses, promoteClauses: p.clauses, arm: run.config.name, replicates: 1,
                            referenceReplicates: 1, noise: nil, noiseSigmas: g.noiseSigmas,
                            decidedBy: p.promote ? p.clauses.filter(\.holds).map(\.name).joined(separator: ", ")
                                : decision == "stop" ? (run.metrics.stoppedStep != nil ? "trainer stop" : "stop rule") : "none held")
    }
}

extension RunRecord {
    /// The run's gate history with its model FLOPs per token: speed counts only between configurations of
    /// different compute per token (StageGate.fasterClause).
    var costedHistory: GateHistory {
        var h = metrics.gateHistory
        h.flopsPerToken = ModelCost(config).flopsPerToken
        return h
    }
}

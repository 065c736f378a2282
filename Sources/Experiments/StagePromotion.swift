// The promote rule of the stage gates (Training/StageGate.swift holds the history types and the
// stop rule the trainer applies while it runs).
//
// Promote when ANY holds against a reference at the same step (`StageGate.promote`), taken as
// the largest eval step both runs have:
//   1. reference loss − run loss >= `promote_margin`;
//   2. |run − reference| <= `equal_tolerance` and the run has better routing: entropy higher by
//      >= `entropy_margin` or max load lower by >= `max_load_margin` (window means at that step);
//   3. |run − reference| <= `equal_tolerance` and the run is faster, which counts only when the two
//      configurations differ in model FLOPs per token (with equal compute per token, as for an
//      aux-coefficient change, a tokens/s difference is the machine's noise, never a reason to
//      promote) and only beyond both runs' own spread: with tokens/s summarised per run as the median
//      and quartiles of its logged intervals up to that step (RunStatistics.swift, at least
//      `minThroughputIntervals` each), the run's median is higher by a fraction >= `throughput_margin`
//      AND its lower quartile is above the reference's upper quartile.
// A decision for `moe-dist gate`: promote if the promote rule holds, else stop if the run was
// stopped by its trainer or the stop rule holds now, else continue.
import Foundation
import Configuration
import Training

public struct PromoteDecision: Equatable, Sendable {
    public var promote: Bool
    public var clauses: [GateClause]
    /// The step compared (largest eval step both runs have), nil when they share none.
    public var step: Int?
    public var evalLoss: Double?
    public var referenceEvalLoss: Double?
    /// With replicates: reference mean − run mean and its standard error (StageGateReplicates.swift).
    public var noise: ReplicateDifference? = nil
    public init(promote: Bool, clauses: [GateClause], step: Int?, evalLoss: Double?, referenceEvalLoss: Double?,
                noise: ReplicateDifference? = nil) {
        self.promote = promote; self.clauses = clauses; self.step = step; self.evalLoss = evalLoss
        self.referenceEvalLoss = referenceEvalLoss; self.noise = noise
    }
    public var reason: String {
        let shown = promote ? clauses.filter(\.holds) : clauses
        return (promote ? "promote: " : "no promotion: ") + shown.map { "\($0.name) \($0.holds ? "" : "not met ")(\($0.detail))" }.joined(separator: "; ")
    }
}

extension StageGate {
    /// Logged intervals each run needs before its tokens/s spread is measured.
    public static let minThroughputIntervals = 4

    /// Promote clause 3 (see the top of the file): equal loss and faster beyond the runs' spread, only
    /// when the model FLOPs per token differ.
    static func fasterClause(_ run: GateHistory, _ reference: GateHistory, step: Int, equal: Bool, equalText: String,
                             _ g: GateConfig) -> GateClause {
        let name = "equal loss, faster"
        let fa = run.flopsPerToken, fb = reference.flopsPerToken
        guard fa > 0, fb > 0 else {
            return GateClause(name: name, holds: false, detail: equalText + "; model FLOPs per token unknown: speed is not compared")
        }
        if abs(fa - fb) <= 1e-9 * max(fa, fb) {
            return GateClause(name: name, holds: false, detail: equalText + String(
                format: "; same model FLOPs per token (%.4g): a tokens/s difference is machine noise, not a reason to promote", fa))
        }
        let sa = SpreadSummary(run.train.filter { $0.step <= step && $0.tokensPerSec > 0 }.map(\.tokensPerSec))
        let sb = SpreadSummary(reference.train.filter { $0.step <= step && $0.tokensPerSec > 0 }.map(\.tokensPerSec))
        guard let sa, let sb, sa.count >= minThroughputIntervals, sb.count >= minThroughputIntervals else {
            return GateClause(name: name, holds: false, detail: equalText + String(
                format: "; %d and %d logged intervals, need %d each to measure the tokens/s spread",
                sa?.count ?? 0, sb?.count ?? 0, minThroughputIntervals))
        }
        let gain = sa.median / sb.median - 1
        let beyondSpread = sa.q25 > sb.q75
        return GateClause(name: name, holds: equal && gain >= g.throughputMargin && beyondSpread, detail: equalText + String(
            format: "; model FLOPs/token %.4g vs %.4g; median tokens/s %.0f vs %.0f (%+.1f%%, margin %.1f%%); "
                + "quartiles %.0f-%.0f vs %.0f-%.0f (%@)",
            fa, fb, sa.median, sb.median, 100 * gain, 100 * g.throughputMargin, sa.q25, sa.q75, sb.q25, sb.q75,
            beyondSpread ? "beyond the spread" : "within the spread"))
    }

    /// The promote rule: `run` against `reference` at the largest eval step both have.
    public static func promote(_ run: GateHistory, reference: GateHistory, _ g: GateConfig) -> PromoteDecision {
        let common = Set(run.evals.map(\.step)).intersection(reference.evals.map(\.step))
        guard let step = common.max(),
              let a = run.evals.last(where: { $0.step == step }), let b = reference.evals.last(where: { $0.step == step }) else {
            return PromoteDecision(promote: false,
                                   clauses: [GateClause(name: "better loss", holds: false, detail: "no eval step in common with the reference")],
                                   step: nil, evalLoss: nil, referenceEvalLoss: nil)
        }
        var clauses: [GateClause] = []
        let gain = b.loss - a.loss
        clauses.append(GateClause(name: "better loss", holds: gain >= g.promoteMargin,
                                  detail: String(format: "eval loss %.4f vs reference %.4f at step %d: %+.4f lower vs promote_margin %.4f",
                                                 a.loss, b.loss, step, gain, g.promoteMargin)))
        let equal = abs(gain) <= g.equalTolerance
        let equalText = String(format: "|difference| %.4f %@ equal_tolerance %.4f", abs(gain), equal ? "<=" : ">", g.equalTolerance)
        // Routing balance at that step: window means.
        let ra = routingWindows(run.upTo(step: step)).last ?? nil
        let rb = routingWindows(reference.upTo(step: step)).last ?? nil
        if let ra, let rb {
            let dEntropy = ra.entropy - rb.entropy, dMax = rb.maxLoad - ra.maxLoad
            let better = dEntropy >= g.entropyMargin || dMax >= g.maxLoadMargin
            clauses.append(GateClause(name: "equal loss, better routing", holds: equal && better,
                                      detail: equalText + String(format: "; entropy %.4f vs %.4f (%+.4f, margin %.4f), max load %.4f vs %.4f (%+.4f lower, margin %.4f)",
                                                                 ra.entropy, rb.entropy, dEntropy, g.entropyMargin,
                                                                 ra.maxLoad, rb.maxLoad, dMax, g.maxLoadMargin)))
        } else {
            clauses.append(GateClause(name: "equal loss, better routing", holds: false, detail: equalText + "; no routing metrics to compare"))
        }
        clauses.append(fasterClause(run, reference, step: step, equal: equal, equalText: equalText, g))
        return PromoteDecision(promote: clauses.contains(where: \.holds), clauses: clauses, step: step,
                               evalLoss: a.loss, referenceEvalLoss: b.loss)
    }
}

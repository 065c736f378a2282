// Stage gates over replicates (runs of one arm that differ only in seeds; Replicates.swift).
//
// Promote: the arm's and the reference arm's histories are averaged step by step (eval loss, train
// points, routing rows, over the runs that all logged that step) and judged by the single-run rule,
// except that "better loss" also needs the mean improvement to exceed `gate.noise_sigmas` standard
// errors of the difference of the means (pooled sample variance of both arms). With one run per arm
// the standard error is unknown and the rule is exactly the single-run one.
// Stop: the single-run stop rule on each replicate; the arm stops when more than half of them would.
import Foundation
import Training
import Configuration

public extension StageGate {
    /// Histories averaged step by step over runs: a point is kept where every run has that step.
    static func meanHistory(_ runs: [GateHistory]) -> GateHistory {
        guard let first = runs.first else { return GateHistory() }
        if runs.count == 1 { return first }
        func common<P>(_ points: (GateHistory) -> [P], _ step: (P) -> Int) -> [Int] {
            var steps = Set(points(first).map(step))
            for r in runs.dropFirst() { steps.formIntersection(points(r).map(step)) }
            return steps.sorted()
        }
        func at<P>(_ h: GateHistory, _ points: (GateHistory) -> [P], _ step: (P) -> Int, _ s: Int) -> P {
            points(h).last { step($0) == s }!
        }
        let n = Double(runs.count)
        let evals = common(\.evals, \.step).map { s in
            EvalPoint(step: s, tokens: at(first, \.evals, \.step, s).tokens,
                      loss: runs.map { at($0, \.evals, \.step, s).loss }.reduce(0, +) / n)
        }
        let train = common(\.train, \.step).map { s in
            TrainPoint(step: s, loss: runs.map { at($0, \.train, \.step, s).loss }.reduce(0, +) / n,
                       tokensPerSec: runs.map { at($0, \.train, \.step, s).tokensPerSec }.reduce(0, +) / n)
        }
        let routing = common(\.routing, \.step).map { s in
            let rows = runs.map { at($0, \.routing, \.step, s) }
            return RoutingPoint(step: s, entropy: rows.map(\.entropy).reduce(0, +) / n,
                                maxLoad: rows.map(\.maxLoad).reduce(0, +) / n, minLoad: rows.map(\.minLoad).reduce(0, +) / n)
        }
        var mean = GateHistory(evals: evals, train: train, routing: routing)
        mean.flopsPerToken = first.flopsPerToken     // replicates share their configuration
        return mean
    }

    /// The promote rule for an arm of replicates against a reference arm (either may be one run).
    static func promote(replicates runs: [GateHistory], reference refs: [GateHistory], _ g: GateConfig) -> PromoteDecision {
        var decision = promote(meanHistory(runs), reference: meanHistory(refs), g)
        guard let step = decision.step, runs.count > 1 || refs.count > 1 else { return decision }
        let a = ReplicateSummary(runs.compactMap { $0.evals.last { $0.step == step }?.loss })
        let b = ReplicateSummary(refs.compactMap { $0.evals.last { $0.step == step }?.loss })
        let diff = ReplicateDifference(b, a)            // reference − run: positive = the run is better
        let gain = diff.difference
        let noiseFloor = diff.standardError.map { g.noiseSigmas * $0 }
        let beatsMargin = gain >= g.promoteMargin
        let beatsNoise = noiseFloor.map { gain >= $0 } ?? true
        var detail = String(format: "mean eval loss %.4f (n %d, sd %.4f) vs reference %.4f (n %d, sd %.4f) at step %d: %+.4f lower vs promote_margin %.4f",
                            a.mean, a.n, a.sd, b.mean, b.n, b.sd, step, gain, g.promoteMargin)
        if let se = diff.standardError, let floor = noiseFloor {
            detail += String(format: " and noise_sigmas %.1f x standard error %.4f = %.4f", g.noiseSigmas, se, floor)
            detail += beatsMargin && !beatsNoise ? " (decided by the noise floor)" : ""
        } else {
            detail += "; no replicates, so no noise figure"
        }
        if let i = decision.clauses.firstIndex(where: { $0.name == "better loss" }) {
            decision.clauses[i] = GateClause(name: "better loss", holds: beatsMargin && beatsNoise, detail: detail)
        }
        decision.promote = decision.clauses.contains(where: \.holds)
        decision.evalLoss = a.mean
        decision.referenceEvalLoss = b.mean
        decision.noise = diff
        return decision
    }

    /// The stop rule per replicate, voted: stop when more than half of the runs meet it.
    static func stop(replicates runs: [GateHistory], _ g: GateConfig) -> StopDecision {
        if runs.count == 1 { return stop(runs[0], g) }
        let each = runs.map { stop($0, g) }
        let votes = each.filter(\.stop).count
        let holds = 2 * votes > runs.count
        var clauses = [GateClause(name: "vote", holds: holds,
                                  detail: "\(votes) of \(runs.count) replicates meet the stop rule (more than half needed)")]
        for (i, d) in each.enumerated() {
            clauses.append(GateClause(name: "replicate \(i + 1)", holds: d.stop, detail: d.reason))
        }
        // The vote decides; the per-replicate clauses are the record.
        return StopDecision(stop: holds, clauses: clauses, decidedByFirstClause: true)
    }
}

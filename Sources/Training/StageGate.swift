// Stage gates (the research notes, "Smaller Iterations + Adaptive Stop Criteria"): pure
// functions over a run's history that decide whether to stop it early or promote it to
// the next phase, each with the reason and the numbers behind it. Thresholds: `gate.*`
// (Configuration/RunConfig.swift, GateConfig).
//
// Stop when ALL hold (`StageGate.stop`):
//   1. plateau: for each of the last `patience` evaluations, the improvement on the best
//      eval loss before it is <= `min_improvement` (needs patience + 1 evaluations);
//   2. flat:    |least-squares slope of train loss over the last `slope_window` steps| · 1000
//      < `flat_slope` (loss per 1k steps; needs 3 train points in the window);
//   3. routing: over the same patience + 1 evaluations, the window means of entropy, max load
//      and min load (each of the worst iteration of its row; window i = expert rows with step in
//      (eval[i-1].step, eval[i].step]) each vary (max − min) by < `routing_tolerance`.
//      Dense runs (no expert rows) pass this clause.
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

// MARK: History points

public struct EvalPoint: Equatable, Sendable {
    public var step: Int, tokens: Int, loss: Double
    public init(step: Int, tokens: Int = 0, loss: Double) { self.step = step; self.tokens = tokens; self.loss = loss }
}

public struct TrainPoint: Equatable, Sendable {
    public var step: Int, loss: Double, tokensPerSec: Double
    public init(step: Int, loss: Double, tokensPerSec: Double = 0) { self.step = step; self.loss = loss; self.tokensPerSec = tokensPerSec }
}

/// One `/experts` row summarised over iterations by its worst iteration: the lowest entropy, the highest
/// max_load and the lowest min_load of any `r` (a mean over iterations hides a collapse in one of them).
public struct RoutingPoint: Equatable, Sendable {
    public var step: Int, entropy: Double, maxLoad: Double, minLoad: Double
    public init(step: Int, entropy: Double, maxLoad: Double, minLoad: Double) {
        self.step = step; self.entropy = entropy; self.maxLoad = maxLoad; self.minLoad = minLoad
    }

    /// The worst iteration of one row, from its per-iteration values (each `[R]`).
    public init<C: Collection>(step: Int, worstOf entropy: C, maxLoad: C, minLoad: C) where C.Element == Double {
        self.init(step: step, entropy: entropy.min() ?? 0, maxLoad: maxLoad.max() ?? 0, minLoad: minLoad.min() ?? 0)
    }
}

/// What the gates read of a run: eval, train and routing points, each sorted by step.
public struct GateHistory: Equatable, Sendable {
    public var evals: [EvalPoint]
    public var train: [TrainPoint]
    public var routing: [RoutingPoint]
    /// Model FLOPs per token of the run's configuration (ModelCost); 0 = unknown.
    public var flopsPerToken: Double = 0
    public init(evals: [EvalPoint] = [], train: [TrainPoint] = [], routing: [RoutingPoint] = []) {
        self.evals = evals; self.train = train; self.routing = routing
    }

    /// The history up to and including `step`.
    public func upTo(step: Int) -> GateHistory {
        var h = GateHistory(evals: evals.filter { $0.step <= step }, train: train.filter { $0.step <= step },
                            routing: routing.filter { $0.step <= step })
        h.flopsPerToken = flopsPerToken
        return h
    }
}

// MARK: Results

/// One clause of a rule: whether it holds, and why, in words with the numbers.
public struct GateClause: Equatable, Sendable, Codable {
    public var name: String
    public var holds: Bool
    public var detail: String
    public init(name: String, holds: Bool, detail: String) { self.name = name; self.holds = holds; self.detail = detail }
}

public struct StopDecision: Equatable, Sendable {
    public var stop: Bool
    public var clauses: [GateClause]
    /// Replicates: the first clause (the vote) decides and the rest are each replicate's decision.
    public var decidedByFirstClause = false
    public init(stop: Bool, clauses: [GateClause], decidedByFirstClause: Bool = false) {
        self.stop = stop; self.clauses = clauses; self.decidedByFirstClause = decidedByFirstClause
    }
    /// `stop: plateau (...); flat (...); routing (...)`, or the clauses that fail.
    public var reason: String {
        let shown = decidedByFirstClause ? Array(clauses.prefix(1)) : stop ? clauses : clauses.filter { !$0.holds }
        return (stop ? "stop: " : "continue: ") + shown.map { "\($0.name) \($0.holds ? "" : "not met ")(\($0.detail))" }.joined(separator: "; ")
    }
}

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

// MARK: Rules

public enum StageGate {
    /// Least-squares slope of `y` against `x` (nil with fewer than 2 distinct x).
    public static func slope(_ x: [Double], _ y: [Double]) -> Double? {
        guard x.count == y.count, x.count >= 2 else { return nil }
        let n = Double(x.count)
        let mx = x.reduce(0, +) / n, my = y.reduce(0, +) / n
        var sxx = 0.0, sxy = 0.0
        for i in x.indices { sxx += (x[i] - mx) * (x[i] - mx); sxy += (x[i] - mx) * (y[i] - my) }
        return sxx > 0 ? sxy / sxx : nil
    }

    /// Mean routing over each eval's window (rows with step in (previous eval step, eval step]);
    /// when a window has no row, the last row at or before the eval step; nil when there is none.
    public static func routingWindows(_ h: GateHistory) -> [RoutingPoint?] {
        var out: [RoutingPoint?] = []
        var previous = Int.min
        for e in h.evals {
            let rows = h.routing.filter { $0.step > previous && $0.step <= e.step }
            if rows.isEmpty {
                out.append(h.routing.last { $0.step <= e.step }.map { RoutingPoint(step: e.step, entropy: $0.entropy, maxLoad: $0.maxLoad, minLoad: $0.minLoad) })
            } else {
                let n = Double(rows.count)
                out.append(RoutingPoint(step: e.step, entropy: rows.map(\.entropy).reduce(0, +) / n,
                                        maxLoad: rows.map(\.maxLoad).reduce(0, +) / n,
                                        minLoad: rows.map(\.minLoad).reduce(0, +) / n))
            }
            previous = e.step
        }
        return out
    }

    /// The stop rule at the last evaluation of `h`.
    public static func stop(_ h: GateHistory, _ g: GateConfig) -> StopDecision {
        var clauses: [GateClause] = []
        let P = g.patience
        let evals = h.evals

        // 1. No eval improvement > min_improvement for `patience` consecutive evals.
        if evals.count < P + 1 {
            clauses.append(GateClause(name: "plateau", holds: false,
                                      detail: "\(evals.count) eval(s), need \(P + 1) for patience \(P)"))
        } else {
            var best = evals[..<(evals.count - P)].map(\.loss).min()!
            var improvements: [Double] = []
            for e in evals.suffix(P) {
                improvements.append(best - e.loss)
                best = min(best, e.loss)
            }
            let largest = improvements.max()!
            let list = improvements.map { String(format: "%.4f", $0) }.joined(separator: ", ")
            clauses.append(GateClause(name: "plateau", holds: largest <= g.minImprovement,
                                      detail: "improvements on the best eval loss over the last \(P) evals [\(list)], "
                                        + String(format: "largest %.4f vs min_improvement %.4f", largest, g.minImprovement)))
        }

        // 2. Train-loss slope near flat over the last slope_window steps.
        if let last = h.train.last {
            let window = h.train.filter { $0.step > last.step - g.slopeWindow }
            if window.count >= 3, let s = slope(window.map { Double($0.step) }, window.map(\.loss)) {
                let per1k = s * 1000
                clauses.append(GateClause(name: "flat", holds: abs(per1k) < g.flatSlope,
                                          detail: String(format: "train loss slope %+.4f per 1k steps over steps %d-%d (%d points) vs flat_slope %.4f",
                                                         per1k, window.first!.step, last.step, window.count, g.flatSlope)))
            } else {
                clauses.append(GateClause(name: "flat", holds: false,
                                          detail: "\(window.count) train point(s) in the last \(g.slopeWindow) steps, need 3"))
            }
        } else {
            clauses.append(GateClause(name: "flat", holds: false, detail: "no train points"))
        }

        // 3. Routing metrics plateaued over the same evals.
        if h.routing.isEmpty {
            clauses.append(GateClause(name: "routing", holds: true, detail: "no routing metrics (dense run)"))
        } else if evals.count < P + 1 {
            clauses.append(GateClause(name: "routing", holds: false, detail: "\(evals.count) eval(s), need \(P + 1)"))
        } else {
            let windows = Array(routingWindows(h).suffix(P + 1))
            if windows.contains(where: { $0 == nil }) {
                clauses.append(GateClause(name: "routing", holds: false, detail: "no routing metrics before an eval of the last \(P + 1)"))
            } else {
                let w = windows.map { $0! }
                func range(_ v: [Double]) -> Double { v.max()! - v.min()! }
                let de = range(w.map(\.entropy)), dmax = range(w.map(\.maxLoad)), dmin = range(w.map(\.minLoad))
                let worst = max(de, dmax, dmin)
                clauses.append(GateClause(name: "routing", holds: worst < g.routingTolerance,
                                          detail: String(format: "changes over the last %d evals: entropy %.4f, max load %.4f, min load %.4f vs routing_tolerance %.4f",
                                                         P + 1, de, dmax, dmin, g.routingTolerance)))
            }
        }
        return StopDecision(stop: clauses.allSatisfy(\.holds), clauses: clauses)
    }

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

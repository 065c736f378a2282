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
// The promote rule and the decision of `moe-dist gate` read finished runs: Experiments/StagePromotion.swift.
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
        let clauses = [plateauClause(h, g), flatClause(h, g), routingClause(h, g)]
        return StopDecision(stop: clauses.allSatisfy(\.holds), clauses: clauses)
    }

    /// 1. No eval improvement > min_improvement for `patience` consecutive evals.
    static func plateauClause(_ h: GateHistory, _ g: GateConfig) -> GateClause {
        let P = g.patience
        let evals = h.evals
        guard evals.count >= P + 1 else {
            return GateClause(name: "plateau", holds: false, detail: "\(evals.count) eval(s), need \(P + 1) for patience \(P)")
        }
        var best = evals[..<(evals.count - P)].map(\.loss).min()!
        var improvements: [Double] = []
        for e in evals.suffix(P) {
            improvements.append(best - e.loss)
            best = min(best, e.loss)
        }
        let largest = improvements.max()!
        let list = improvements.map { String(format: "%.4f", $0) }.joined(separator: ", ")
        return GateClause(name: "plateau", holds: largest <= g.minImprovement,
                          detail: "improvements on the best eval loss over the last \(P) evals [\(list)], "
                            + String(format: "largest %.4f vs min_improvement %.4f", largest, g.minImprovement))
    }

    /// 2. Train-loss slope near flat over the last slope_window steps.
    static func flatClause(_ h: GateHistory, _ g: GateConfig) -> GateClause {
        guard let last = h.train.last else { return GateClause(name: "flat", holds: false, detail: "no train points") }
        let window = h.train.filter { $0.step > last.step - g.slopeWindow }
        guard window.count >= 3, let s = slope(window.map { Double($0.step) }, window.map(\.loss)) else {
            return GateClause(name: "flat", holds: false,
                              detail: "\(window.count) train point(s) in the last \(g.slopeWindow) steps, need 3")
        }
        let per1k = s * 1000
        return GateClause(name: "flat", holds: abs(per1k) < g.flatSlope,
                          detail: String(format: "train loss slope %+.4f per 1k steps over steps %d-%d (%d points) vs flat_slope %.4f",
                                         per1k, window.first!.step, last.step, window.count, g.flatSlope))
    }

    /// 3. Routing metrics plateaued over the same evals as the plateau clause.
    static func routingClause(_ h: GateHistory, _ g: GateConfig) -> GateClause {
        let P = g.patience
        let evals = h.evals
        if h.routing.isEmpty {
            return GateClause(name: "routing", holds: true, detail: "no routing metrics (dense run)")
        }
        guard evals.count >= P + 1 else {
            return GateClause(name: "routing", holds: false, detail: "\(evals.count) eval(s), need \(P + 1)")
        }
        let windows = Array(routingWindows(h).suffix(P + 1))
        if windows.contains(where: { $0 == nil }) {
            return GateClause(name: "routing", holds: false, detail: "no routing metrics before an eval of the last \(P + 1)")
        }
        let w = windows.map { $0! }
        func range(_ v: [Double]) -> Double { v.max()! - v.min()! }
        let de = range(w.map(\.entropy)), dmax = range(w.map(\.maxLoad)), dmin = range(w.map(\.minLoad))
        let worst = max(de, dmax, dmin)
        return GateClause(name: "routing", holds: worst < g.routingTolerance,
                          detail: String(format: "changes over the last %d evals: entropy %.4f, max load %.4f, min load %.4f vs routing_tolerance %.4f",
                                         P + 1, de, dmax, dmin, g.routingTolerance))
    }
}

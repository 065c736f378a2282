// The runs of one stage of the research notes' experiment matrix (or one ablation), planned from a
// base configuration and, for the later phases, the previous stage's gate JSON: `moe-dist sweep`
// writes them as YAML files and a Slurm array manifest.
import Foundation
import Configuration
import Training

/// One planned run: its name, config and the keys changed from where it came from.
public struct PlannedRun {
    public var name: String
    public var config: RunConfig
    public var changes: [(String, ConfigValue)]
}

/// A stage of the matrix (1, 1b, 2, 3) or an ablation (A3, A4, A5, balancing, routers).
public enum SweepStage: Equatable {
    case phase(String)
    case ablation(String)
}

/// What replicates' seeds vary: init (train.seed, the data order fixed), data (train.data_seed) or both.
public enum ReplicateSeeds: String, CaseIterable { case `init`, data, both }

public struct SweepPlan {
    /// "phase 1", "ablation A3"
    public var label: String
    /// The stage's subdirectory of the output: "phase-1", "ablation-A3".
    public var directory: String
    /// The step budget of every run (nil: the base's own, which may be a token budget).
    public var steps: Int?
    public var runs: [PlannedRun]
    /// Which gate run a stage was built from and why (Phase 1b).
    public var choiceNote: String?

    /// The stage's runs from `base`; `steps` overrides the stage's default budget; `gate` is the previous
    /// stage's gate JSON (needed by phases 1b, 2 and 3).
    public init(_ stage: SweepStage, base: RunConfig, steps: Int?, gate: String?) throws {
        switch stage {
        case .ablation(let a):
            (label, directory, self.steps) = ("ablation " + a, "ablation-" + a, steps ?? base.train.maxSteps)
            runs = Self.ablationRuns(a, base: base)
        case .phase("1"):
            (label, directory, self.steps) = ("phase 1", "phase-1", steps ?? 1000)
            runs = [0.0, 0.005, 0.01, 0.02].map { aux in
                Self.with(base, "p1-aux\(Self.numberText(aux))", [("moe.aux_loss_coef", .double(aux))]) { $0.moe.auxLossCoef = aux }
            }
        case .phase("1b"):
            (label, directory, self.steps) = ("phase 1b", "phase-1b", steps ?? 1000)
            let picked = try Self.phase1bChoice(base: base, gate: gate!)
            choiceNote = picked.note
            runs = [picked.run]
        case .phase("2"):
            (label, directory, self.steps) = ("phase 2", "phase-2", steps ?? 5000)
            runs = try Self.phase2Runs(gate: gate!)
        case .phase:
            (label, directory, self.steps) = ("phase 3", "phase-3", steps ?? base.train.maxSteps)
            runs = try Self.phase3Runs(gate: gate!)
        }
    }

    static func with(_ c: RunConfig, _ name: String, _ changes: [(String, ConfigValue)],
                     _ edit: (inout RunConfig) -> Void) -> PlannedRun {
        var c = c
        edit(&c)
        c.name = name
        return PlannedRun(name: name, config: c, changes: changes)
    }

    /// `p1-aux0.005` -> `aux0.005`: a run's name without its stage prefix.
    static func stem(_ name: String) -> String {
        for p in ["p1-", "p1b-", "p2-", "p3-"] where name.hasPrefix(p) { return String(name.dropFirst(p.count)) }
        return name
    }

    static func numberText(_ x: Double) -> String { "\(x)" }

    /// The arms of ablation `a` (A3, A4, A5, balancing, routers), each a change of `base`.
    static func ablationRuns(_ a: String, base b: RunConfig) -> [PlannedRun] {
        var runs: [PlannedRun] = []
        switch a {
        case "A3":
            for e in [20, 40, 60] { runs.append(with(b, "a3-e\(e)", [("moe.num_experts", .int(e))]) { $0.moe.numExperts = e }) }
        case "A4":
            for f in [1024, 2048, 3072] { runs.append(with(b, "a4-ff\(f)", [("moe.d_ff", .int(f))]) { $0.moe.dFF = f }) }
        case "balancing":
            runs.append(with(b, "bal-aux0.01", [("moe.aux_loss_coef", .double(0.01))]) { $0.moe.auxLossCoef = 0.01 })
            runs.append(with(b, "bal-bias", [("moe.aux_loss_coef", .double(0)), ("moe.router_bias_rate", .double(1e-3))]) {
                $0.moe.auxLossCoef = 0; $0.moe.routerBiasRate = 1e-3
            })
            runs.append(with(b, "bal-deepseek", [("moe.router_score", .string("sigmoid")), ("moe.router_bias_rate", .double(1e-3)),
                                                 ("moe.aux_scope", .string("sequence")), ("moe.aux_loss_coef", .double(1e-4))]) {
                $0.moe.routerScore = .sigmoid; $0.moe.routerBiasRate = 1e-3; $0.moe.auxScope = .sequence; $0.moe.auxLossCoef = 1e-4
            })
        case "routers":
            runs.append(with(b, "rt-shared", [("moe.experts", .string("shared")), ("moe.routers", .string("per_pool"))]) {
                $0.moe.experts = .shared; $0.moe.routers = .perPool
            })
            runs.append(with(b, "rt-per-iteration", [("moe.experts", .string("shared")), ("moe.routers", .string("per_iteration"))]) {
                $0.moe.experts = .shared; $0.moe.routers = .perIteration
            })
            runs.append(with(b, "rt-indexed", [("moe.experts", .string("indexed")), ("moe.routers", .string("per_pool"))]) {
                $0.moe.experts = .indexed; $0.moe.routers = .perPool
            })
        default:
            for x in Sharing.allCases { runs.append(with(b, "a5-\(x.rawValue)", [("moe.experts", .string(x.rawValue))]) { $0.moe.experts = x }) }
        }
        return runs
    }

    /// Phase 1b: top-1 routing with the aux coefficient of the run the Phase 1 gate ranked best, and why that run.
    static func phase1bChoice(base b: RunConfig, gate: String) throws -> (run: PlannedRun, note: String) {
        let g = try GateResult(path: gate)
        guard let picked = g.rankedBest(promoteMargin: b.gate.promoteMargin) else {
            throw DataError("\(gate): no run with an eval loss")
        }
        let aux = try GateResult.config(picked.dir).moe.auxLossCoef
        let run = with(b, "p1b-top1-aux\(numberText(aux))", [("moe.top_k", .int(1)), ("moe.aux_loss_coef", .double(aux))]) {
            $0.moe.topK = 1; $0.moe.auxLossCoef = aux
        }
        return (run, picked.note)
    }

    /// Phase 2: the best two arms of the gate, and the winner with 20 and 60 experts.
    static func phase2Runs(gate: String) throws -> [PlannedRun] {
        let g = try GateResult(path: gate)
        let top = Array(try g.armsByMeanLoss().prefix(2))
        guard let winner = top.first else { throw DataError("\(gate): no run with an eval loss") }
        var runs: [PlannedRun] = []
        for dir in top {
            let c = try GateResult.config(dir)
            runs.append(with(c, "p2-" + stem(c.name), [("from", .string(dir))]) { _ in })
        }
        let w = try GateResult.config(winner)
        for e in [20, 60] where e != w.moe.numExperts {
            runs.append(with(w, "p2-\(stem(w.name))-e\(e)", [("from", .string(winner)), ("moe.num_experts", .int(e))]) {
                $0.moe.numExperts = e
            })
        }
        return runs
    }

    /// Phase 3: the 1-2 winners: the promoted runs of the gate (lowest eval loss first), or its best.
    static func phase3Runs(gate: String) throws -> [PlannedRun] {
        let g = try GateResult(path: gate)
        let losses = Dictionary(g.runs.map { ($0.dir, $0.loss) }, uniquingKeysWith: { a, _ in a })
        var winners = try GateResult.distinctArms(g.promoted.sorted { (losses[$0] ?? .infinity) < (losses[$1] ?? .infinity) })
        if winners.isEmpty, let best = g.best ?? g.runs.first?.dir { winners = [best] }
        return try winners.prefix(2).map { dir -> PlannedRun in
            let c = try GateResult.config(dir)
            return with(c, "p3-" + stem(c.name), [("from", .string(dir))]) { _ in }
        }
    }

    /// Each run as `seeds` replicates (unchanged for 1): names `<name>-s<seed>`, seeds S ..< S + n.
    public static func replicate(_ runs: [PlannedRun], seeds n: Int, vary: ReplicateSeeds) -> [PlannedRun] {
        guard n > 1 else { return runs }
        return runs.flatMap { r in
            (0 ..< n).map { i -> PlannedRun in
                var c = r.config
                let base = c.train.seed, seed = base + i
                let dataBase = c.train.effectiveDataSeed
                switch vary {
                case .`init`: c.train.seed = seed; c.train.dataSeed = dataBase
                case .data: c.train.dataSeed = dataBase + i
                case .both: c.train.seed = seed; c.train.dataSeed = dataBase + i
                }
                let tag = vary == .data ? dataBase + i : seed
                c.name = "\(Replicates.stem(r.name))-s\(tag)"
                var changes = r.changes
                if vary != .data { changes.append(("train.seed", .int(c.train.seed))) }
                changes.append(("train.data_seed", .int(c.train.dataSeed!)))
                return PlannedRun(name: c.name, config: c, changes: changes)
            }
        }
    }
}

/// The previous stage's gate JSON: runs (dir, eval loss), promoted dirs, best dir.
struct GateResult {
    var runs: [(dir: String, loss: Double)]
    var promoted: [String]
    var best: String?
    /// Each listed run with an eval loss: the gate's decision, its reason and (replicates) its noise floor.
    var decisions: [Decision] = []
    struct Decision {
        var dir: String, loss: Double, decision: String, reason: String, noiseFloor: Double?
    }
    init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else { throw DataError("\(path): no such gate file") }
        guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw DataError("\(path): not a gate JSON object (write it with moe-dist gate --json)")
        }
        // Relative run directories are relative to the gate file's directory; a gate file written
        // elsewhere than where its paths start (`moe-dist gate runs/* > sweeps/s1/phase-1/gate.json`, run
        // from the directory the paths start in) falls back to the working directory.
        let base = URL(fileURLWithPath: path).deletingLastPathComponent()
        func resolve(_ d: String) -> String {
            if d.hasPrefix("/") { return d }
            let nextToFile = base.appendingPathComponent(d).standardizedFileURL.path
            if FileManager.default.fileExists(atPath: nextToFile) { return nextToFile }
            let fromHere = URL(fileURLWithPath: d).standardizedFileURL.path
            return FileManager.default.fileExists(atPath: fromHere) ? fromHere : nextToFile
        }
        let list = obj["runs"] as? [[String: Any]] ?? []
        runs = list.compactMap { r in
            guard let d = r["run_dir"] as? String, let l = r["eval_loss"] as? Double else { return nil }
            return (resolve(d), l)
        }.sorted { $0.loss < $1.loss }
        promoted = (obj["promoted"] as? [String] ?? []).map(resolve)
        best = (obj["best"] as? String).map(resolve)
        decisions = list.compactMap { r in
            guard let d = r["run_dir"] as? String, let l = r["eval_loss"] as? Double else { return nil }
            let floor = (r["noise"] as? [String: Any])?["noise_floor"] as? Double
            return Decision(dir: resolve(d), loss: l, decision: r["decision"] as? String ?? "", reason: r["reason"] as? String ?? "",
                            noiseFloor: floor)
        }
        if runs.isEmpty && best == nil { throw DataError("\(path): the gate JSON lists no run with an eval loss") }
    }
    /// The run the gate ranked best, for Phase 1b, and a line that says why: the gate's decision first
    /// (promote, then continue, then stop), then the lower eval loss. A run with a lower eval loss that the
    /// gate did not rank first is named, with the difference against the gate's margin (`promote_margin`, or
    /// the noise floor of replicates): a smaller difference is noise to the gate, so the gate's choice stands.
    func rankedBest(promoteMargin: Double) -> (dir: String, note: String)? {
        let order = ["promote": 0, "continue": 1, "stop": 2]
        func rank(_ d: Decision) -> Int { order[d.decision] ?? 3 }
        let ranked = decisions.sorted { (rank($0), $0.loss) < (rank($1), $1.loss) }
        guard let chosen = ranked.first else { return nil }
        let name = URL(fileURLWithPath: chosen.dir).lastPathComponent
        var note = String(format: "phase 1b: from %@ (gate decision %@, eval loss %.4f)", name,
                          chosen.decision.isEmpty ? "none" : chosen.decision, chosen.loss)
        if let lowest = decisions.min(by: { $0.loss < $1.loss }), lowest.dir != chosen.dir {
            let d = chosen.loss - lowest.loss, margin = lowest.noiseFloor ?? promoteMargin
            let what = lowest.noiseFloor != nil ? "the noise floor of its replicates" : "gate.promote_margin"
            note += String(format: "; %@ has a lower eval loss by %.4f, %@ %@ %.4f, but the gate decided %@ for it: %@",
                           URL(fileURLWithPath: lowest.dir).lastPathComponent, d, d < margin ? "within" : "beyond",
                           what, margin, lowest.decision.isEmpty ? "nothing" : lowest.decision, lowest.reason)
        }
        return (chosen.dir, note)
    }

    /// One run directory per arm (replicates share an arm), arms ordered by their mean eval loss.
    func armsByMeanLoss() throws -> [String] {
        let arms = Replicates.arms(try runs.map { ($0, try GateResult.config($0.dir)) }) { $0.1 }
        let ranked = arms.map { arm in (dir: arm[0].0.dir, mean: ReplicateSummary(arm.map(\.0.loss)).mean) }
        return ranked.sorted { $0.mean < $1.mean }.map(\.dir)
    }

    /// The first directory of each arm among `dirs`, in order.
    static func distinctArms(_ dirs: [String]) throws -> [String] {
        Replicates.arms(try dirs.map { ($0, try config($0)) }) { $0.1 }.map { $0[0].0 }
    }

    /// The configuration of a listed run: its config.yaml, or its metrics.h5's config.
    static func config(_ dir: String) throws -> RunConfig {
        try RunRecord.config(dir)
    }
}

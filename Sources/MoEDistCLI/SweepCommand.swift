// `moe-dist sweep`: the run configurations of one stage of the research notes' experiment
// matrix (or one ablation), as YAML files plus a manifest for a Slurm job array.
import Foundation
import ArgumentParser
import Configuration
import Experiments
import Model
import Training

struct SweepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Write the run configs of a stage (1, 1b, 2, 3) or ablation (A3-A5, balancing, routers) and a Slurm array manifest.",
        discussion: reflow("""
        Phases (research notes, "Practical Experiment Matrix"):
          1   quick screen, --steps 1000: moe.aux_loss_coef 0.0, 0.005, 0.01 (control), 0.02
          1b  moe.top_k=1 with the aux of the run the Phase 1 gate (--gate) ranked best: its decision
              first (promote, continue, stop), then the lower eval loss; a lower loss the gate did not
              act on (within gate.promote_margin, or the replicates' noise floor) is named and left
          2   --steps 5000: the best two runs of --gate (lowest eval_loss) and moe.num_experts 20 and 60
              around the winner (the active FFN budget per token is recorded for each)
          3   long run (--steps, default the base budget) of the 1-2 winners: the promoted runs of --gate
              (lowest eval loss first), or its best when none was promoted
        Ablations (--ablation, budget --steps or the base's): A3 moe.num_experts 20/40/60; A4 moe.d_ff
        1024/2048/3072; A5 moe.experts shared vs indexed at the same token budget (train.max_tokens =
        steps x global_batch x seq_len, no step budget);
        balancing: bal-aux0.01 (control: Switch aux 0.01), bal-bias (aux 0, selection bias rate 1e-3),
        bal-deepseek (sigmoid scores, bias rate 1e-3, sequence aux 1e-4: the DeepSeek-V3 recipe);
        routers, at the same token budget: rt-shared (one router for the shared pool), rt-per-iteration (one
        router per iteration over the shared pool), rt-indexed (one pool, and router, per iteration).
        Writes OUT/phase-P/<run>.yaml (or OUT/ablation-A/<run>.yaml), runs.txt with one absolute YAML path
        per line (line i = Slurm array task i, 1-based with sed -n "${i}p"), and sweep.json:
        {"phase"|"ablation", "base", "gate", "steps", "runs": [{"name", "config", "changes": {key: value},
        "max_steps", "max_tokens", "active_parameters_per_token", "active_expert_parameters_per_token",
        "total_parameters"}]}. Active parameters count the embedding only once data fix the vocabulary.
        Replicates: --seeds N writes N runs of every arm, named <arm>-s<seed> with seeds S, S+1, ..., S+N-1
        (S = the arm's train.seed); --vary init changes train.seed and keeps the data order (train.data_seed
        fixed at S), --vary data changes train.data_seed only, --vary both changes both. compare and gate treat
        runs that differ only in name and seeds as replicates of one arm.
        Examples:
          moe-dist sweep --phase 1 --base jobs/configs/seed-reference.yaml \\
              --out sweeps/s1
          moe-dist sweep --ablation A3 --base jobs/configs/cpu-small.yaml \\
              --out sweeps/a3 --steps 300
          moe-dist sweep --ablation balancing --base jobs/configs/cpu-small.yaml \\
              --out sweeps/balancing --steps 300 --seeds 3
        """))

    @Option(help: ArgumentHelp("Stage of the matrix: 1, 1b, 2 or 3.", valueName: "P"))
    var phase: String?

    @Option(help: ArgumentHelp("Ablation instead of a phase: A3, A4, A5, balancing or routers.", valueName: "A"))
    var ablation: String?

    static let ablations = ["A3", "A4", "A5", "balancing", "routers"]

    /// The ablation's canonical name (A3-A5 in capitals, the others in lower case), or nil.
    var ablationName: String? {
        ablation.flatMap { a in Self.ablations.first { $0.lowercased() == a.lowercased() } }
    }

    /// Ablations whose arms differ in cost per step compare at the same token budget.
    var sameTokenBudget: Bool { ablationName == "A5" || ablationName == "routers" }

    @Option(help: ArgumentHelp("Base configuration every run starts from.", valueName: "file.yaml"))
    var base: String

    @Option(help: ArgumentHelp("Output directory.", valueName: "dir"))
    var out: String

    @Option(help: ArgumentHelp("Step budget per run (default: 1000 for 1/1b, 5000 for 2, the base's budget otherwise).",
                               valueName: "N"))
    var steps: Int?

    @Option(help: ArgumentHelp("Gate JSON of the previous stage (moe-dist gate --json), needed by 1b, 2 and 3; "
                               + "relative run directories in it are relative to the file's directory.",
                               valueName: "gate.json"))
    var gate: String?

    @Option(help: ArgumentHelp("Replicates per arm, each with its own seed (named <arm>-s<seed>).", valueName: "N"))
    var seeds: Int = 1

    enum Vary: String, ExpressibleByArgument, CaseIterable { case `init`, data, both }

    @Option(help: ArgumentHelp("What the replicates' seeds vary: init (train.seed), data (train.data_seed) or both.",
                               valueName: "init|data|both"))
    var vary: Vary = .both

    func validate() throws {
        if seeds < 1 { throw ValidationError("--seeds must be at least 1, got \(seeds)") }
        switch (phase, ablation) {
        case (nil, nil): throw ValidationError("give --phase 1|1b|2|3 or --ablation A3|A4|A5|balancing|routers")
        case (.some, .some): throw ValidationError("give either --phase or --ablation, not both")
        default: break
        }
        if let p = phase, !["1", "1b", "2", "3"].contains(p) { throw ValidationError("--phase must be 1, 1b, 2 or 3, got \(p)") }
        if let a = ablation, ablationName == nil { throw ValidationError("--ablation must be A3, A4, A5, balancing or routers, got \(a)") }
        if let s = steps, s < 1 { throw ValidationError("--steps must be at least 1, got \(s)") }
        if let p = phase, ["1b", "2", "3"].contains(p), gate == nil { throw ValidationError("--phase \(p) needs --gate (the previous stage's gate JSON)") }
    }

    /// One planned run: its name, config and the keys changed from where it came from.
    struct Planned {
        var name: String
        var config: RunConfig
        var changes: [(String, ConfigValue)]
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
            guard let data = FileManager.default.contents(atPath: path) else { throw UserError("\(path): no such gate file", status: ExitStatus.badData) }
            guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw UserError("\(path): not a gate JSON object (write it with moe-dist gate --json)", status: ExitStatus.badData)
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
            if runs.isEmpty && best == nil { throw UserError("\(path): the gate JSON lists no run with an eval loss", status: ExitStatus.badData) }
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

    /// `p1-aux0.005` -> `aux0.005`: a run's name without its stage prefix.
    static func stem(_ name: String) -> String {
        for p in ["p1-", "p1b-", "p2-", "p3-"] where name.hasPrefix(p) { return String(name.dropFirst(p.count)) }
        return name
    }

    static func numberText(_ x: Double) -> String { "\(x)" }

    func plan(base b: RunConfig) throws -> (label: String, dir: String, steps: Int?, runs: [Planned]) {
        var note: String?
        return try plan(base: b, choiceNote: &note)
    }

    /// The stage's runs; `choiceNote` says which gate run a stage was built from and why (Phase 1b).
    func plan(base b: RunConfig, choiceNote: inout String?) throws -> (label: String, dir: String, steps: Int?, runs: [Planned]) {
        func with(_ c: RunConfig, _ name: String, _ changes: [(String, ConfigValue)], _ edit: (inout RunConfig) -> Void) -> Planned {
            var c = c
            edit(&c)
            c.name = name
            return Planned(name: name, config: c, changes: changes)
        }
        if let a = ablationName {
            let s = steps ?? b.train.maxSteps
            var runs: [Planned] = []
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
            return ("ablation " + a, "ablation-" + a, s, runs)
        }
        let p = phase!
        switch p {
        case "1":
            let runs = [0.0, 0.005, 0.01, 0.02].map { aux in
                with(b, "p1-aux\(Self.numberText(aux))", [("moe.aux_loss_coef", .double(aux))]) { $0.moe.auxLossCoef = aux }
            }
            return ("phase 1", "phase-1", steps ?? 1000, runs)
        case "1b":
            let g = try GateResult(path: gate!)
            guard let picked = g.rankedBest(promoteMargin: b.gate.promoteMargin) else {
                throw UserError("\(gate!): no run with an eval loss", status: ExitStatus.badData)
            }
            choiceNote = picked.note
            let aux = try GateResult.config(picked.dir).moe.auxLossCoef
            let run = with(b, "p1b-top1-aux\(Self.numberText(aux))", [("moe.top_k", .int(1)), ("moe.aux_loss_coef", .double(aux))]) {
                $0.moe.topK = 1; $0.moe.auxLossCoef = aux
            }
            return ("phase 1b", "phase-1b", steps ?? 1000, [run])
        case "2":
            let g = try GateResult(path: gate!)
            let top = Array(try g.armsByMeanLoss().prefix(2))
            guard let winner = top.first else { throw UserError("\(gate!): no run with an eval loss", status: ExitStatus.badData) }
            var runs: [Planned] = []
            for dir in top {
                let c = try GateResult.config(dir)
                runs.append(with(c, "p2-" + Self.stem(c.name), [("from", .string(dir))]) { _ in })
            }
            let w = try GateResult.config(winner)
            for e in [20, 60] where e != w.moe.numExperts {
                runs.append(with(w, "p2-\(Self.stem(w.name))-e\(e)", [("from", .string(winner)), ("moe.num_experts", .int(e))]) {
                    $0.moe.numExperts = e
                })
            }
            return ("phase 2", "phase-2", steps ?? 5000, runs)
        default:
            let g = try GateResult(path: gate!)
            let losses = Dictionary(g.runs.map { ($0.dir, $0.loss) }, uniquingKeysWith: { a, _ in a })
            var winners = try GateResult.distinctArms(g.promoted.sorted { (losses[$0] ?? .infinity) < (losses[$1] ?? .infinity) })
            if winners.isEmpty, let best = g.best ?? g.runs.first?.dir { winners = [best] }
            let runs = try winners.prefix(2).map { dir -> Planned in
                let c = try GateResult.config(dir)
                return with(c, "p3-" + Self.stem(c.name), [("from", .string(dir))]) { _ in }
            }
            return ("phase 3", "phase-3", steps ?? b.train.maxSteps, runs)
        }
    }

    /// Each run as `seeds` replicates (unchanged for 1): names `<name>-s<seed>`, seeds S ..< S + n.
    static func replicate(_ runs: [Planned], seeds n: Int, vary: Vary) -> [Planned] {
        guard n > 1 else { return runs }
        return runs.flatMap { r in
            (0 ..< n).map { i -> Planned in
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
                return Planned(name: c.name, config: c, changes: changes)
            }
        }
    }

    func run() throws {
        try failingCleanly {
            let b = try ConfigLoader.load(yamlPath: base, overrides: [])
            var choiceNote: String?
            var (label, sub, budget, runs) = try plan(base: b, choiceNote: &choiceNote)
            if let note = choiceNote { print(note) }
            runs = Self.replicate(runs, seeds: seeds, vary: vary)
            let isA5 = sameTokenBudget
            if budget == nil && !(isA5 && b.train.maxTokens != nil) {
                throw UserError("--steps: the base \(base) has no train.max_steps; give --steps")
            }
            let dir = URL(fileURLWithPath: out).appendingPathComponent(sub).standardizedFileURL.path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            var manifest: [String] = []
            var entries: [[String: Any]] = []
            for i in runs.indices {
                if isA5 {
                    // Same token budget for both: train.max_tokens, no step budget.
                    let tokens = budget.map { $0 * b.tokensPerStep } ?? b.train.maxTokens!
                    runs[i].config.train.maxTokens = tokens
                    runs[i].config.train.maxSteps = nil
                } else {
                    runs[i].config.train.maxSteps = budget
                    runs[i].config.train.maxTokens = nil
                }
                let r = runs[i]
                do { try r.config.validate(worldSize: 1) } catch { throw UserError("\(r.name): \(error)") }
                let cost = ModelCost(r.config)
                let mats = r.config.moe.activation == .swiglu ? 3 : 2
                let activeFFN = r.config.moe.isDense ? 0 : r.config.moe.topK * mats * r.config.model.dModel * r.config.moe.dFF
                let path = dir + "/" + r.name + ".yaml"
                let changeText = r.changes.map { "\($0.0)=\($0.1)" }.joined(separator: " ")
                var text = "# moe-dist sweep, \(label): \(r.name)\n# changes: \(changeText)\n"
                text += "# budget: " + (r.config.train.maxSteps.map { "\($0) steps" } ?? "\(r.config.train.maxTokens!) tokens") + "\n"
                text += "# active parameters per token: \(cost.activeParameters) (experts: top_k \(r.config.moe.topK) x \(mats) x d_model x d_ff = \(activeFFN) per pool visit"
                text += r.config.model.vocabSize == 0 ? "; embedding not counted until the vocabulary is known)\n" : ")\n"
                text += r.config.toYAML()
                try text.write(toFile: path, atomically: true, encoding: .utf8)
                manifest.append(path)
                var changes: [String: Any] = [:]
                for (k, v) in r.changes {
                    switch v {
                    case .int(let x): changes[k] = x
                    case .double(let x): changes[k] = x
                    case .bool(let x): changes[k] = x
                    case .string(let x): changes[k] = x
                    case .null: changes[k] = NSNull()
                    }
                }
                entries.append(["name": r.name, "config": path, "changes": changes,
                                "max_steps": jsonNumber(r.config.train.maxSteps), "max_tokens": jsonNumber(r.config.train.maxTokens),
                                "active_parameters_per_token": cost.activeParameters,
                                "active_expert_parameters_per_token": activeFFN,
                                "total_parameters": cost.totalParameters])
                print(r.name.padding(toLength: max(28, r.name.count), withPad: " ", startingAt: 0)
                      + " \(changeText)  active params/token \(cost.activeParameters) (experts \(activeFFN))")
            }
            try (manifest.joined(separator: "\n") + "\n").write(toFile: dir + "/runs.txt", atomically: true, encoding: .utf8)
            var sweep: [String: Any] = ["base": base, "gate": gate.map { $0 as Any } ?? NSNull(),
                                        "steps": jsonNumber(budget), "runs": entries]
            if let p = phase { sweep["phase"] = p } else { sweep["ablation"] = ablationName! }
            if let note = choiceNote { sweep["choice"] = note }
            try (jsonText(sweep, pretty: true) + "\n").write(toFile: dir + "/sweep.json", atomically: true, encoding: .utf8)
            print("\(runs.count) run\(runs.count == 1 ? "" : "s") (\(label)): \(dir)/runs.txt")
        }
    }
}

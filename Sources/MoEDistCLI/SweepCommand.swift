// `moe-dist sweep`: the run configurations of one stage of the research notes' experiment
// matrix (or one ablation), as YAML files plus a manifest for a Slurm job array.
import Foundation
import ArgumentParser
import Configuration
import Model

struct SweepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Write the run configs of a stage (1, 1b, 2, 3) or ablation (A3, A4, A5) and a Slurm array manifest.",
        discussion: reflow("""
        Phases (research notes, "Practical Experiment Matrix"):
          1   quick screen, --steps 1000: moe.aux_loss_coef 0.0, 0.005, 0.01 (control), 0.02
          1b  moe.top_k=1 with the best aux of Phase 1 (--gate: the Phase 1 gate JSON, its "best")
          2   --steps 5000: the best two runs of --gate (lowest eval_loss) and moe.num_experts 20 and 60
              around the winner (the active FFN budget per token is recorded for each)
          3   long run (--steps, default the base budget) of the 1-2 winners: the promoted runs of --gate
              (lowest eval loss first), or its best when none was promoted
        Ablations (--ablation, budget --steps or the base's): A3 moe.num_experts 20/40/60; A4 moe.d_ff
        1024/2048/3072; A5 moe.experts shared vs indexed at the same token budget (train.max_tokens =
        steps x global_batch x seq_len, no step budget).
        Writes OUT/phase-P/<run>.yaml (or OUT/ablation-A/<run>.yaml), runs.txt with one absolute YAML path
        per line (line i = Slurm array task i, 1-based with sed -n "${i}p"), and sweep.json:
        {"phase"|"ablation", "base", "gate", "steps", "runs": [{"name", "config", "changes": {key: value},
        "max_steps", "max_tokens", "active_parameters_per_token", "active_expert_parameters_per_token",
        "total_parameters"}]}. Active parameters count the embedding only once data fix the vocabulary.
        Examples:
          moe-dist sweep --phase 1 --base jobs/configs/seed-reference.yaml \\
              --out sweeps/s1
          moe-dist sweep --ablation A3 --base jobs/configs/cpu-small.yaml \\
              --out sweeps/a3 --steps 300
        """))

    @Option(help: ArgumentHelp("Stage of the matrix: 1, 1b, 2 or 3.", valueName: "P"))
    var phase: String?

    @Option(help: ArgumentHelp("Ablation instead of a phase: A3, A4 or A5.", valueName: "A"))
    var ablation: String?

    @Option(help: ArgumentHelp("Base configuration every run starts from.", valueName: "file.yaml"))
    var base: String

    @Option(help: ArgumentHelp("Output directory.", valueName: "dir"))
    var out: String

    @Option(help: ArgumentHelp("Step budget per run (default: 1000 for 1/1b, 5000 for 2, the base's budget otherwise).",
                               valueName: "N"))
    var steps: Int?

    @Option(help: ArgumentHelp("Gate JSON of the previous stage (moe-dist gate --json), needed by 1b, 2 and 3.",
                               valueName: "gate.json"))
    var gate: String?

    func validate() throws {
        switch (phase, ablation) {
        case (nil, nil): throw ValidationError("give --phase 1|1b|2|3 or --ablation A3|A4|A5")
        case (.some, .some): throw ValidationError("give either --phase or --ablation, not both")
        default: break
        }
        if let p = phase, !["1", "1b", "2", "3"].contains(p) { throw ValidationError("--phase must be 1, 1b, 2 or 3, got \(p)") }
        if let a = ablation, !["A3", "A4", "A5"].contains(a.uppercased()) { throw ValidationError("--ablation must be A3, A4 or A5, got \(a)") }
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
        init(path: String) throws {
            guard let data = FileManager.default.contents(atPath: path) else { throw UserError("\(path): no such gate file") }
            guard let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw UserError("\(path): not a gate JSON object (write it with moe-dist gate --json)")
            }
            let list = obj["runs"] as? [[String: Any]] ?? []
            runs = list.compactMap { r in
                guard let d = r["run_dir"] as? String, let l = r["eval_loss"] as? Double else { return nil }
                return (d, l)
            }.sorted { $0.loss < $1.loss }
            promoted = obj["promoted"] as? [String] ?? []
            best = obj["best"] as? String
            if runs.isEmpty && best == nil { throw UserError("\(path): the gate JSON lists no run with an eval loss") }
        }
        /// RUN_DIR/config.yaml of a listed run.
        static func config(_ dir: String) throws -> RunConfig {
            let p = dir + "/config.yaml"
            guard FileManager.default.fileExists(atPath: p) else { throw UserError("\(p): no such file (run of the gate JSON)") }
            return try ConfigLoader.load(yamlPath: p, overrides: [])
        }
    }

    /// `p1-aux0.005` -> `aux0.005`: a run's name without its stage prefix.
    static func stem(_ name: String) -> String {
        for p in ["p1-", "p1b-", "p2-", "p3-"] where name.hasPrefix(p) { return String(name.dropFirst(p.count)) }
        return name
    }

    static func numberText(_ x: Double) -> String { "\(x)" }

    func plan(base b: RunConfig) throws -> (label: String, dir: String, steps: Int?, runs: [Planned]) {
        func with(_ c: RunConfig, _ name: String, _ changes: [(String, ConfigValue)], _ edit: (inout RunConfig) -> Void) -> Planned {
            var c = c
            edit(&c)
            c.name = name
            return Planned(name: name, config: c, changes: changes)
        }
        if let a = ablation?.uppercased() {
            let s = steps ?? b.train.maxSteps
            var runs: [Planned] = []
            switch a {
            case "A3":
                for e in [20, 40, 60] { runs.append(with(b, "a3-e\(e)", [("moe.num_experts", .int(e))]) { $0.moe.numExperts = e }) }
            case "A4":
                for f in [1024, 2048, 3072] { runs.append(with(b, "a4-ff\(f)", [("moe.d_ff", .int(f))]) { $0.moe.dFF = f }) }
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
            guard let best = g.best ?? g.runs.first?.dir else { throw UserError("\(gate!): no best run") }
            let aux = try GateResult.config(best).moe.auxLossCoef
            let run = with(b, "p1b-top1-aux\(Self.numberText(aux))", [("moe.top_k", .int(1)), ("moe.aux_loss_coef", .double(aux))]) {
                $0.moe.topK = 1; $0.moe.auxLossCoef = aux
            }
            return ("phase 1b", "phase-1b", steps ?? 1000, [run])
        case "2":
            let g = try GateResult(path: gate!)
            let top = Array(g.runs.prefix(2).map(\.dir))
            guard let winner = top.first else { throw UserError("\(gate!): no run with an eval loss") }
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
            var winners = g.promoted.sorted { (losses[$0] ?? .infinity) < (losses[$1] ?? .infinity) }
            if winners.isEmpty, let best = g.best ?? g.runs.first?.dir { winners = [best] }
            let runs = try winners.prefix(2).map { dir -> Planned in
                let c = try GateResult.config(dir)
                return with(c, "p3-" + Self.stem(c.name), [("from", .string(dir))]) { _ in }
            }
            return ("phase 3", "phase-3", steps ?? b.train.maxSteps, runs)
        }
    }

    func run() throws {
        try failingCleanly {
            let b = try ConfigLoader.load(yamlPath: base, overrides: [])
            var (label, sub, budget, runs) = try plan(base: b)
            let isA5 = ablation?.uppercased() == "A5"
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
            if let p = phase { sweep["phase"] = p } else { sweep["ablation"] = ablation!.uppercased() }
            try (jsonText(sweep, pretty: true) + "\n").write(toFile: dir + "/sweep.json", atomically: true, encoding: .utf8)
            print("\(runs.count) run\(runs.count == 1 ? "" : "s") (\(label)): \(dir)/runs.txt")
        }
    }
}

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

    typealias Vary = ReplicateSeeds

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

    func run() throws {
        try failingCleanly {
            let b = try ConfigLoader.load(yamlPath: base, overrides: [])
            let stage = ablationName.map { SweepStage.ablation($0) } ?? .phase(phase!)
            let plan = try SweepPlan(stage, base: b, steps: steps, gate: gate)
            let (label, sub, budget, choiceNote) = (plan.label, plan.directory, plan.steps, plan.choiceNote)
            if let note = choiceNote { print(note) }
            var runs = SweepPlan.replicate(plan.runs, seeds: seeds, vary: vary)
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
                let written = try Self.write(runs[i], label: label, to: dir)
                manifest.append(written.path)
                entries.append(written.entry)
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

    /// Writes the run's YAML (with a header saying what changed, its budget and its active parameters) into
    /// `dir`, prints its line, and returns its path and its sweep.json entry.
    static func write(_ r: PlannedRun, label: String, to dir: String) throws -> (path: String, entry: [String: Any]) {
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
        print(r.name.padding(toLength: max(28, r.name.count), withPad: " ", startingAt: 0)
              + " \(changeText)  active params/token \(cost.activeParameters) (experts \(activeFFN))")
        return (path, ["name": r.name, "config": path, "changes": changes,
                       "max_steps": jsonNumber(r.config.train.maxSteps), "max_tokens": jsonNumber(r.config.train.maxTokens),
                       "active_parameters_per_token": cost.activeParameters,
                       "active_expert_parameters_per_token": activeFFN,
                       "total_parameters": cost.totalParameters])
    }
}

extension ReplicateSeeds: ExpressibleByArgument {}

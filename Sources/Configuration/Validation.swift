// The rules a resolved configuration must satisfy (SPEC section 1), given the world size.
// Each failure is a ConfigError naming the key and the rule, e.g.
// `moe.top_k: must be <= moe.num_experts (40), got 41`.

/// Throws the first rule `c` breaks for a run on `worldSize` ranks (see `validationErrors`).
public func validate(_ c: RunConfig, worldSize: Int) throws {
    if let first = validationErrors(c, worldSize: worldSize).first { throw first }
}

/// Every rule `c` breaks for a run on `worldSize` ranks, in key order (empty = valid).
public func validationErrors(_ c: RunConfig, worldSize: Int) -> [ConfigError] {
    var rules = Rules()
    if worldSize < 1 { rules.fail(nil, "world size must be >= 1, got \(worldSize)") }
    if c.name.isEmpty || c.name.contains("/") { rules.fail("name", "must be a non-empty name without '/', got \"\(c.name)\"") }
    rules.checkModel(c.model)
    rules.checkMoE(c.moe)
    rules.checkTrain(c, worldSize: worldSize)
    for (key, path) in [("data.train", c.data.train), ("data.valid", c.data.valid), ("data.tokenizer", c.data.tokenizer)] {
        if let p = path, p.isEmpty { rules.fail(key, "must be a path or null, got an empty string") }
    }
    rules.checkParallel(c.parallel, experts: c.moe.numExperts, worldSize: worldSize)
    rules.checkGate(c.gate)
    return rules.errors
}

/// The broken rules found so far, and the checks of each config section (each appends in key order).
private struct Rules {
    var errors: [ConfigError] = []

    mutating func fail(_ key: String?, _ message: String) { errors.append(ConfigError(key: key, message)) }
    mutating func atLeast(_ key: String, _ v: Int, _ lo: Int) { if v < lo { fail(key, "must be >= \(lo), got \(v)") } }
    mutating func positive(_ key: String, _ v: Double) {
        if !(v > 0 && v.isFinite) { fail(key, "must be > 0, got \(formatDouble(v))") }
    }
    mutating func nonNegative(_ key: String, _ v: Double) {
        if !(v >= 0 && v.isFinite) { fail(key, "must be >= 0, got \(formatDouble(v))") }
    }
    mutating func unitOpen(_ key: String, _ v: Double) {
        if !(v >= 0 && v < 1) { fail(key, "must be in [0, 1), got \(formatDouble(v))") }
    }

    /// model.*
    mutating func checkModel(_ m: ModelConfig) {
        atLeast("model.vocab_size", m.vocabSize, 0)
        atLeast("model.d_model", m.dModel, 1)
        atLeast("model.n_heads", m.nHeads, 1)
        if m.dModel >= 1 && m.nHeads >= 1 {
            if m.dModel % m.nHeads != 0 {
                fail("model.n_heads", "must divide model.d_model (\(m.dModel)), got \(m.nHeads)")
            } else if m.headDim % 2 != 0 {
                fail("model.n_heads", "head width model.d_model / model.n_heads must be even for rotary embeddings, got \(m.dModel) / \(m.nHeads) = \(m.headDim)")
            }
        }
        atLeast("model.seq_len", m.seqLen, 1)
        atLeast("model.depth", m.depth, 1)
        positive("model.rope_base", m.ropeBase)
        positive("model.norm_eps", m.normEps)
    }

    /// moe.*
    mutating func checkMoE(_ e: MoELayerConfig) {
        atLeast("moe.num_experts", e.numExperts, 0)
        if e.numExperts > 0 {
            if e.topK < 1 { fail("moe.top_k", "must be >= 1, got \(e.topK)") }
            else if e.topK > e.numExperts { fail("moe.top_k", "must be <= moe.num_experts (\(e.numExperts)), got \(e.topK)") }
        }
        atLeast("moe.d_ff", e.dFF, 1)
        nonNegative("moe.capacity_factor", e.capacityFactor)
        nonNegative("moe.aux_loss_coef", e.auxLossCoef)
        nonNegative("moe.z_loss_coef", e.zLossCoef)
        nonNegative("moe.router_bias_rate", e.routerBiasRate)
        if e.routers == .perIteration && e.experts == .indexed {
            fail("moe.routers", "per_iteration needs moe.experts = shared (indexed pools already have one router per iteration)")
        }
        if e.isDense {
            // Routing keys mean nothing without experts: only their defaults are accepted, so a typo'd ablation fails.
            if e.routerScore != .softmax { fail("moe.router_score", "needs moe.num_experts > 0 (a dense run has no router)") }
            if e.routerBiasRate != 0 { fail("moe.router_bias_rate", "needs moe.num_experts > 0 (a dense run has no router)") }
            if e.auxScope != .microBatch { fail("moe.aux_scope", "needs moe.num_experts > 0 (a dense run has no aux loss)") }
            if e.routers != .perPool { fail("moe.routers", "needs moe.num_experts > 0 (a dense run has no router)") }
        }
    }

    /// train.* (the global batch's rule names a fix, which needs the whole configuration).
    mutating func checkTrain(_ c: RunConfig, worldSize: Int) {
        let t = c.train
        atLeast("train.global_batch", t.globalBatch, 1)
        atLeast("train.micro_batch", t.microBatch, 1)
        if t.globalBatch >= 1 && t.microBatch >= 1 && worldSize >= 1 && t.globalBatch % (t.microBatch * worldSize) != 0 {
            // The commands fit the micro-batch first (BatchFit.swift); this names the override that fixes it.
            let fix: String
            do { fix = "train.micro_batch=\(try c.batchFit(worldSize: worldSize).microBatch)" } catch {
                fix = "train.global_batch=\((t.globalBatch + worldSize - 1) / worldSize * worldSize)"
            }
            fail("train.global_batch", "must be a multiple of train.micro_batch × world size (\(t.microBatch) × \(worldSize) = \(t.microBatch * worldSize)), got \(t.globalBatch); add the override \(fix)")
        }
        positive("train.lr", t.lr)
        if !(t.minLrRatio >= 0 && t.minLrRatio <= 1) { fail("train.min_lr_ratio", "must be in [0, 1], got \(formatDouble(t.minLrRatio))") }
        atLeast("train.warmup_steps", t.warmupSteps, 0)
        nonNegative("train.weight_decay", t.weightDecay)
        unitOpen("train.beta1", t.beta1)
        unitOpen("train.beta2", t.beta2)
        positive("train.eps", t.eps)
        nonNegative("train.grad_clip", t.gradClip)
        atLeast("train.seed", t.seed, 0)
        if let s = t.dataSeed { atLeast("train.data_seed", s, 0) }
        checkBudgetAndIntervals(t)
    }

    /// train.*: the budget and the intervals.
    mutating func checkBudgetAndIntervals(_ t: TrainConfig) {
        if t.maxSteps == nil && t.maxTokens == nil {
            fail("train.max_steps", "one of train.max_steps and train.max_tokens must be set (the run needs a budget)")
        }
        if let s = t.maxSteps { atLeast("train.max_steps", s, 1) }
        if let s = t.maxTokens { atLeast("train.max_tokens", s, 1) }
        atLeast("train.eval_interval", t.evalInterval, 1)
        atLeast("train.eval_tokens", t.evalTokens, 2)
        atLeast("train.log_interval", t.logInterval, 1)
        atLeast("train.checkpoint_interval", t.checkpointInterval, 1)
        atLeast("train.keep_checkpoints", t.keepCheckpoints, 1)
    }

    /// parallel.*
    mutating func checkParallel(_ p: ParallelConfig, experts E: Int, worldSize: Int) {
        if worldSize >= 1 {
            if let ep = p.expertParallel {
                if ep < 1 { fail("parallel.expert_parallel", "must be >= 1, got \(ep)") }
                else if worldSize % ep != 0 { fail("parallel.expert_parallel", "must divide the world size (\(worldSize)), got \(ep)") }
                else if E > 0 && ep > E { fail("parallel.expert_parallel", "must be <= moe.num_experts (\(E)), got \(ep)") }
            } else if E > 0 && worldSize > E {
                fail("parallel.expert_parallel", "defaults to the world size (\(worldSize)), which must be <= moe.num_experts (\(E)); set it to a divisor of \(worldSize) that is <= \(E)")
            }
        }
        nonNegative("parallel.collective_timeout", p.collectiveTimeout)
    }

    /// gate.*
    mutating func checkGate(_ g: GateConfig) {
        nonNegative("gate.min_improvement", g.minImprovement)
        atLeast("gate.patience", g.patience, 1)
        atLeast("gate.slope_window", g.slopeWindow, 1)
        positive("gate.flat_slope", g.flatSlope)
        nonNegative("gate.routing_tolerance", g.routingTolerance)
        nonNegative("gate.promote_margin", g.promoteMargin)
        nonNegative("gate.equal_tolerance", g.equalTolerance)
        nonNegative("gate.entropy_margin", g.entropyMargin)
        nonNegative("gate.max_load_margin", g.maxLoadMargin)
        nonNegative("gate.throughput_margin", g.throughputMargin)
        nonNegative("gate.noise_sigmas", g.noiseSigmas)
    }
}

extension RunConfig {
    /// `validate(self, worldSize:)`.
    public func validate(worldSize: Int) throws { try Configuration.validate(self, worldSize: worldSize) }

    /// Ranks sharing one copy of each pool's experts: `parallel.expert_parallel`, or the world size.
    public func expertParallel(worldSize: Int) -> Int { parallel.expertParallel ?? worldSize }

    /// Target tokens per optimizer step: `train.global_batch × model.seq_len`.
    public var tokensPerStep: Int { train.globalBatch * model.seqLen }

    /// Micro-steps accumulated per optimizer step: `global_batch / (micro_batch × world)`.
    public func microSteps(worldSize: Int) -> Int { train.globalBatch / (train.microBatch * worldSize) }

    /// True when no training file is given: the trainer uses its generated corpus.
    public var usesGeneratedCorpus: Bool { data.train == nil }
}

// The resolved configuration of a run: SPEC section 1, one struct per YAML section.
// Field names are the YAML keys in lowerCamelCase (`moe.aux_loss_coef` -> `moe.auxLossCoef`).
// Defaults are those of the reference run `recurrent_shared_moe_40e_top2_ff2048_wikitext103`.
// Reading: ConfigLoader (YAML + `key=value` overrides); rules: validate(_:worldSize:);
// text forms: toJSON/fromJSON/toYAML (Serialization.swift); the key table: ConfigKeys.swift.

/// Whether a recurrent iteration reuses one set of weights (`shared`) or has its own (`indexed`).
public enum Sharing: String, Codable, Sendable, CaseIterable { case shared, indexed }

/// Expert (and dense FFN) non-linearity.
public enum Activation: String, Codable, Sendable, CaseIterable { case gelu, swiglu }

/// Router scores: `softmax` (S = P = softmax(z)) or `sigmoid` (S = σ(z), P = S / Σ S for the aux loss).
public enum RouterScoreKind: String, Codable, Sendable, CaseIterable { case softmax, sigmoid }

/// The groups the aux loss balances: the whole global micro-batch, or each sequence (averaged).
public enum AuxScope: String, Codable, Sendable, CaseIterable { case microBatch = "micro_batch", sequence }

/// One router per expert pool, or one per recurrent iteration over the shared pool.
public enum RouterPlacement: String, Codable, Sendable, CaseIterable { case perPool = "per_pool", perIteration = "per_iteration" }

/// `model.*`
public struct ModelConfig: Codable, Equatable, Sendable {
    /// 0 until resolved: from the tokenizer, the token files, or the generated corpus.
    public var vocabSize = 0
    public var dModel = 512
    public var nHeads = 8
    public var seqLen = 256
    /// Recurrent iterations R.
    public var depth = 6
    public var trunk: Sharing = .shared
    public var depthEmbedding = true
    public var tieEmbeddings = true
    public var ropeBase = 10000.0
    public var normEps = 1e-5
    public init() {}
    public var headDim: Int { dModel / nHeads }
    /// Attention blocks stored: 1 (shared trunk) or R (indexed).
    public var numBlocks: Int { trunk == .shared ? 1 : depth }
}

/// `moe.*`
public struct MoELayerConfig: Codable, Equatable, Sendable {
    /// E; 0 means a dense FFN of width `dFF`.
    public var numExperts = 40
    public var topK = 2
    public var dFF = 2048
    public var experts: Sharing = .shared
    public var activation: Activation = .gelu
    public var normalizeGates = true
    /// 0 = dropless; c > 0 = capacity ceil(c*k*N/E) per expert.
    public var capacityFactor = 0.0
    public var auxLossCoef = 0.01
    public var zLossCoef = 0.0
    public var routerScore: RouterScoreKind = .softmax
    /// γ > 0: auxiliary-loss-free balancing with a per-expert selection bias, b_e += γ·sign(c̄ − c_e) per step.
    public var routerBiasRate = 0.0
    public var auxScope: AuxScope = .microBatch
    public var routers: RouterPlacement = .perPool
    public init() {}
    public var isDense: Bool { numExperts == 0 }
}

/// `train.*`
public struct TrainConfig: Codable, Equatable, Sendable {
    public var globalBatch = 32
    public var microBatch = 8
    public var lr = 3e-4
    public var minLrRatio = 0.1
    public var warmupSteps = 200
    public var weightDecay = 0.1
    public var beta1 = 0.9
    public var beta2 = 0.95
    public var eps = 1e-8
    /// Maximum global L2 norm of the gradients; 0 disables clipping.
    public var gradClip = 1.0
    /// Seeds the initialisation (and dropout-free training has no other randomness).
    public var seed = 1234
    /// Seeds the data order (and the built-in generated corpus); nil = `seed`. Replicates vary `seed`,
    /// `dataSeed` or both (`moe-dist sweep --seeds N --vary init|data|both`).
    public var dataSeed: Int? = nil
    /// The data seed in force: `dataSeed`, else `seed`.
    public var effectiveDataSeed: Int { dataSeed ?? seed }
    /// Step budget; nil = none (then `maxTokens` must be set).
    public var maxSteps: Int? = nil
    /// Token budget; nil = none. Training ends at whichever budget ends first.
    public var maxTokens: Int? = nil
    public var evalInterval = 500
    /// Validation tokens scored per evaluation (the first M of the file; M - 1 targets).
    public var evalTokens = 13299
    public var logInterval = 10
    public var checkpointInterval = 500
    public var keepCheckpoints = 3
    public init() {}
}

/// `data.*`: paths; nil = the built-in generated corpus.
public struct DataConfig: Codable, Equatable, Sendable {
    public var train: String? = nil
    public var valid: String? = nil
    public var tokenizer: String? = nil
    public init() {}
}

/// `parallel.*`
public struct ParallelConfig: Codable, Equatable, Sendable {
    /// Ranks sharing one copy of each pool's experts; nil = the world size.
    public var expertParallel: Int? = nil
    /// Lend experts from a busy rank of an expert group to an idle one, use by use (no result changes).
    public var balanceExperts: Bool = true
    /// Seconds one MPI collective may last before the job is ended with a message naming the ranks that
    /// did not arrive (a stopped or hung rank); 0 = wait for ever.
    public var collectiveTimeout: Double = 600
    public init() {}
}

/// `gate.*`: stage gates (the research notes' stop rule, Training/StageGate.swift, and promote rule, Experiments/StagePromotion.swift).
/// Stop early when ALL hold over the last `patience` evaluations: no eval improvement
/// > `minImprovement` on the best before it; train-loss least-squares slope over the last
/// `slopeWindow` steps below `flatSlope` (loss per 1k steps, absolute); entropy, max and
/// min load (means over iterations, per evaluation window) each vary by < `routingTolerance`.
/// Promote when ANY holds against a reference run at the same step: eval loss lower by
/// >= `promoteMargin`; or equal within `equalTolerance` and entropy higher by >=
/// `entropyMargin`, max load lower by >= `maxLoadMargin`, or tokens/s higher by a
/// fraction >= `throughputMargin` (only between configurations of different model FLOPs per token, and
/// beyond both runs' tokens/s spread: StageGate.fasterClause).
public struct GateConfig: Codable, Equatable, Sendable {
    /// Apply the stop rule at every evaluation of a training run.
    public var enabled = true
    public var minImprovement = 0.02
    public var patience = 3
    /// 1000 steps: two evaluation intervals of the reference run, inside the 1500 steps that `patience`
    /// evaluations span. With ~100 logged points and train-loss noise ~0.03 (the notes' log), the slope's
    /// standard error is ~0.01 per 1k steps, well under `flatSlope`.
    public var slopeWindow = 1000
    /// 0.04 loss per 1k steps = `minImprovement` per 500-step evaluation interval: training loss
    /// falls slower than an eval improvement that would count.
    public var flatSlope = 0.04
    /// Absolute change of entropy (0..1) and of max/min load (1 = even).
    public var routingTolerance = 0.05
    public var promoteMargin = 0.05
    public var equalTolerance = 0.01
    public var entropyMargin = 0.02
    public var maxLoadMargin = 0.1
    public var throughputMargin = 0.1
    /// With replicates (runs equal but for name and seeds): "better loss" also needs the mean improvement
    /// to exceed this many standard errors of the difference of the means.
    public var noiseSigmas = 2.0
    public init() {}
}

/// A whole run.
public struct RunConfig: Codable, Equatable, Sendable {
    /// Free-form run name (used for run directories and reports).
    public var name = "recurrent_shared_moe_40e_top2_ff2048_wikitext103"
    public var model = ModelConfig()
    public var moe = MoELayerConfig()
    public var train = TrainConfig()
    public var data = DataConfig()
    public var parallel = ParallelConfig()
    public var gate = GateConfig()
    public init() {}
}

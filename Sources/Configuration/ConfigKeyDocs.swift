// What each key of the table (ConfigKeys.swift) means and which values it takes, for
// `moe-dist config` and docs/configuration.md (generated from this file and the table by
// `moe-dist config --markdown`; a test fails when a key lacks an entry or the file drifts).
// Defaults are not written here: they are read from `RunConfig()`.

/// The documentation of one key.
public struct ConfigKeyDoc: Sendable {
    /// What the key does, one or two sentences.
    public let meaning: String
    /// The values accepted (the rule `validate` applies).
    public let values: String
}

extension RunConfig {
    /// One entry per key of `RunConfig.keys`.
    public static let keyDocs: [String: ConfigKeyDoc] = [
        "name": .init(meaning: "Run name: the default run directory is runs/<name>; reports and the gate use it.",
                      values: "non-empty, no '/'"),

        "model.vocab_size": .init(meaning: "Vocabulary size V (embedding rows, output classes). 0 = from data.train's header, "
                                  + "or 256 for the generated corpus (a value > 0 sets the generated corpus's vocabulary).",
                                  values: "integer >= 0; when set with data.train it must equal the token file's vocabulary"),
        "model.d_model": .init(meaning: "Model width d.", values: "integer >= 1, divisible by model.n_heads"),
        "model.n_heads": .init(meaning: "Attention heads; head width d_model / n_heads.",
                               values: "integer >= 1 dividing model.d_model, head width even (rotary embeddings)"),
        "model.seq_len": .init(meaning: "Sequence length T: tokens per training window and per evaluation window.",
                               values: "integer >= 1"),
        "model.depth": .init(meaning: "Recurrent iterations R: how many times the block (attention + MoE FFN) is applied.",
                             values: "integer >= 1"),
        "model.trunk": .init(meaning: "shared: one attention/norm block reused by every iteration; indexed: one per iteration.",
                             values: "shared, indexed"),
        "model.depth_embedding": .init(meaning: "Add a learned per-iteration vector to the residual stream before each iteration.",
                                       values: "true, false"),
        "model.tie_embeddings": .init(meaning: "The output head reuses the input embedding matrix.", values: "true, false"),
        "model.rope_base": .init(meaning: "Rotary position embedding base.", values: "number > 0"),
        "model.norm_eps": .init(meaning: "RMSNorm epsilon.", values: "number > 0"),

        "moe.num_experts": .init(meaning: "Experts E per pool; 0 = a dense FFN of width moe.d_ff instead of experts.",
                                 values: "integer >= 0; >= parallel.expert_parallel"),
        "moe.top_k": .init(meaning: "Experts k each token is routed to.", values: "integer 1 ... moe.num_experts"),
        "moe.d_ff": .init(meaning: "Hidden width F of each expert (or of the dense FFN).", values: "integer >= 1"),
        "moe.experts": .init(meaning: "shared: one expert pool used by every iteration; indexed: one pool (and router) per iteration.",
                             values: "shared, indexed"),
        "moe.activation": .init(meaning: "Expert non-linearity: gelu (two matrices) or swiglu (three).", values: "gelu, swiglu"),
        "moe.normalize_gates": .init(meaning: "Renormalise the top-k router probabilities of a token to sum to 1.",
                                     values: "true, false"),
        "moe.capacity_factor": .init(meaning: "0 = dropless; c > 0 caps each expert at ceil(c·k·N/E) tokens per micro-batch "
                                     + "(N tokens); the rest are dropped (their MoE output is zero).",
                                     values: "number >= 0"),
        "moe.aux_loss_coef": .init(meaning: "Weight of the Switch load-balancing loss E·Σ f_e·P_e, averaged over iterations.",
                                   values: "number >= 0"),
        "moe.z_loss_coef": .init(meaning: "Weight of the router z-loss mean(logsumexp(logits)^2).", values: "number >= 0"),
        "moe.router_score": .init(meaning: "Router scores S: softmax(z), or sigmoid σ(z) (DeepSeek-V3); with sigmoid the aux "
                                  + "loss sees P = S / Σ S and the gates are S of the chosen experts (renormalised when "
                                  + "normalize_gates and top_k > 1).",
                                  values: "softmax, sigmoid"),
        "moe.router_bias_rate": .init(meaning: "γ > 0: auxiliary-loss-free balancing. Each router gets a selection bias b "
                                      + "(a buffer, stored in checkpoints under /buffers): experts are the top-k of S + b, gates "
                                      + "stay S; after every applied update b_e += γ·sign(mean(c) − c_e) from the step's "
                                      + "assignment counts c. 0 = no bias.",
                                      values: "number >= 0"),
        "moe.aux_scope": .init(meaning: "The aux loss over the whole global micro-batch, or per sequence and averaged "
                               + "(DeepSeek-V3's sequence-wise balance loss).",
                               values: "micro_batch, sequence"),
        "moe.routers": .init(meaning: "One router per expert pool, or one router per recurrent iteration over the shared pool "
                             + "(ffn/0/router/<r>).",
                             values: "per_pool, per_iteration (needs moe.experts = shared)"),

        "train.global_batch": .init(meaning: "Sequences per optimizer step, at every world size (tokens per step = "
                                    + "global_batch × seq_len).",
                                    values: "integer >= 1, a multiple of the world size"),
        "train.micro_batch": .init(meaning: "Most sequences one rank processes at once (memory). On W ranks the run uses the "
                                   + "largest value <= this for which value × W divides global_batch, says so and records it.",
                                   values: "integer >= 1"),
        "train.lr": .init(meaning: "Peak learning rate (AdamW).", values: "number > 0"),
        "train.min_lr_ratio": .init(meaning: "The cosine schedule ends at lr × min_lr_ratio at the step budget.",
                                    values: "number in [0, 1]"),
        "train.warmup_steps": .init(meaning: "Linear warm-up: lr·(step+1)/warmup_steps for the first steps.",
                                    values: "integer >= 0"),
        "train.weight_decay": .init(meaning: "AdamW decoupled weight decay, on matrices only (not norms, biases or the depth embedding).",
                                    values: "number >= 0"),
        "train.beta1": .init(meaning: "AdamW first-moment decay.", values: "number in [0, 1)"),
        "train.beta2": .init(meaning: "AdamW second-moment decay.", values: "number in [0, 1)"),
        "train.eps": .init(meaning: "AdamW epsilon.", values: "number > 0"),
        "train.grad_clip": .init(meaning: "Largest global L2 norm of the gradients; 0 = no clipping.", values: "number >= 0"),
        "train.seed": .init(meaning: "Seed of the initialisation (and of the data, unless train.data_seed is set).",
                            values: "integer >= 0"),
        "train.data_seed": .init(meaning: "Seed of the data order and of the generated corpus; null = train.seed. Replicates "
                                 + "vary train.seed, this, or both (moe-dist sweep --seeds N --vary init|data|both).",
                                 values: "integer >= 0 or null"),
        "train.max_steps": .init(meaning: "Step budget; training ends at whichever of max_steps and max_tokens ends first.",
                                 values: "integer >= 1 or null; one of max_steps, max_tokens must be set"),
        "train.max_tokens": .init(meaning: "Token budget (tokens = steps × global_batch × seq_len).",
                                  values: "integer >= 1 or null"),
        "train.eval_interval": .init(meaning: "Evaluate every this many steps (and at the end).", values: "integer >= 1"),
        "train.eval_tokens": .init(meaning: "Validation tokens M scored per evaluation: the first M of data.valid "
                                   + "(M − 1 targets).",
                                   values: "integer >= 2"),
        "train.log_interval": .init(meaning: "Log a training line and a metrics row every this many steps.",
                                    values: "integer >= 1"),
        "train.checkpoint_interval": .init(meaning: "Write a checkpoint every this many steps (and at the end).",
                                           values: "integer >= 1"),
        "train.keep_checkpoints": .init(meaning: "Keep the newest this many checkpoints.", values: "integer >= 1"),

        "data.train": .init(meaning: "Training token file (moe-dist data prepare); null = the built-in generated corpus.",
                            values: "path or null"),
        "data.valid": .init(meaning: "Validation token file for the evaluations. null: with data.train, no evaluation; "
                            + "without it, the generated corpus's validation stream.",
                            values: "path or null"),
        "data.tokenizer": .init(meaning: "tokenizer.json the token files were made with (recorded with the run; decoding and checks use it).",
                                values: "path or null"),

        "parallel.expert_parallel": .init(meaning: "Ranks G sharing one copy of each expert pool; world / G copies "
                                          + "all-reduce their expert gradients. null = the world size.",
                                          values: "integer >= 1 dividing the world size, <= moe.num_experts; or null"),
        "parallel.balance_experts": .init(meaning: "In each MoE use, a rank of an expert group whose experts received more "
                                          + "rows lends whole experts (weights there, gradient back) to the least busy rank, "
                                          + "which runs them. Changes no result (each expert runs on one thread either way; "
                                          + "README, Expert lending); false = every expert runs on its owner.",
                                          values: "true, false"),
        "parallel.collective_timeout": .init(meaning: "Seconds one collective (all-reduce, all-to-all, broadcast, barrier) "
                                             + "of an MPI run may last. A rank that stopped or hung leaves the others waiting "
                                             + "in their next collective; after this long they end the job with exit status 1 "
                                             + "and a message naming the rank(s) and host(s) that did not arrive. The last "
                                             + "published checkpoint stays intact (docs/cluster.md). It must exceed the longest "
                                             + "legitimate wait: a step, an evaluation or a checkpoint write of the slowest rank. "
                                             + "0 = wait for ever. Runs with --emulate-ranks are not watched.",
                                             values: "number >= 0 (seconds)"),

        "gate.enabled": .init(meaning: "Apply the stop rule at every evaluation of a training run.", values: "true, false"),
        "gate.min_improvement": .init(meaning: "Stop rule: an evaluation counts as an improvement only when it beats the best "
                                      + "before it by more than this (loss).",
                                      values: "number >= 0"),
        "gate.patience": .init(meaning: "Stop rule: evaluations without improvement before a run may stop.",
                               values: "integer >= 1"),
        "gate.slope_window": .init(meaning: "Stop rule: steps over which the training-loss slope is fitted.",
                                   values: "integer >= 1"),
        "gate.flat_slope": .init(meaning: "Stop rule: training loss is flat when |slope| is below this (loss per 1k steps).",
                                 values: "number > 0"),
        "gate.routing_tolerance": .init(meaning: "Stop rule: routing has plateaued when entropy, max and min load each vary by "
                                        + "less than this over the patience window.",
                                        values: "number >= 0"),
        "gate.promote_margin": .init(meaning: "Promote: eval loss lower than the reference's by at least this.",
                                     values: "number >= 0"),
        "gate.equal_tolerance": .init(meaning: "Eval losses within this count as equal (then routing or speed may promote).",
                                      values: "number >= 0"),
        "gate.entropy_margin": .init(meaning: "Promote at equal loss: routing entropy higher by at least this.",
                                     values: "number >= 0"),
        "gate.max_load_margin": .init(meaning: "Promote at equal loss: max load lower by at least this.",
                                      values: "number >= 0"),
        "gate.throughput_margin": .init(meaning: "Promote at equal loss, only when the model FLOPs per token differ: tokens/s "
                                        + "higher by at least this fraction and beyond both runs' step-time spread.",
                                        values: "number >= 0"),
        "gate.noise_sigmas": .init(meaning: "With replicates (runs equal but for name and seeds): promote on better loss only "
                                   + "when the mean improvement also exceeds this many standard errors of the difference of "
                                   + "the arms' means (pooled across-seed variance). Single runs: no effect.",
                                   values: "number >= 0"),
    ]

    /// The type column of the reference.
    public static func typeText(_ key: ConfigKey) -> String {
        let base: String
        switch key.kind {
        case .int: base = "integer"
        case .double: base = "number"
        case .bool: base = "boolean"
        case .string: base = key.name.hasPrefix("data.") ? "path" : "string"
        case .choice: base = "choice"
        }
        return key.optional ? base + " or null" : base
    }

    /// docs/configuration.md: the key table as Markdown, one section per YAML section
    /// (`moe-dist config --markdown` prints it; ConfigurationTests compares it with the file).
    public static func referenceMarkdown() -> String {
        var out = """
        # Configuration reference

        Generated by `moe-dist config --markdown` from the code's key table
        (`Sources/Configuration/ConfigKeys.swift`) and its documentation
        (`Sources/Configuration/ConfigKeyDocs.swift`); a test fails when they drift apart.

        A run is a YAML file with a top-level `name` and the sections below, plus `key=value`
        overrides on the command line applied in order (`moe.top_k=1 train.max_steps=50`; `null`
        unsets an optional key). Keys left out take the defaults below, which are those of the
        reference run. Unknown keys, wrong types and values outside the valid range stop a command
        before any work with one line naming the key. `moe-dist config --config FILE [--world N]
        [key=value ...]` prints the values a run would use.

        """
        for section in [""] + sections {
            out += section.isEmpty ? "\n## Top level\n\n" : "\n## `\(section).*`\n\n"
            out += "| key | type | default | valid values | meaning |\n| --- | --- | --- | --- | --- |\n"
            for k in keys where k.section == section {
                let d = keyDocs[k.name]
                func cell(_ s: String) -> String { s.replacingOccurrences(of: "|", with: "\\|") }
                out += "| `\(k.name)` | \(typeText(k)) | `\(defaultText(k))` | \(cell(d?.values ?? "?")) | \(cell(d?.meaning ?? "?")) |\n"
            }
        }
        return out
    }

    /// The default value of every key, as YAML text.
    public static func defaultText(_ key: ConfigKey) -> String { key.get(RunConfig()).description }
}

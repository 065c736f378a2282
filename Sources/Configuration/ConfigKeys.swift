// The table of every configuration key: its dotted snake_case name (SPEC section 1),
// its type, and how to read and write it in a RunConfig. The YAML loader, the
// overrides, JSON/YAML output and architecture comparison all go through this one table.

/// One configuration value, as written in YAML/JSON.
public enum ConfigValue: Equatable, Sendable, CustomStringConvertible {
    case int(Int), double(Double), bool(Bool), string(String), null

    /// YAML/JSON text of the value (strings unquoted; see `ConfigKey.yamlText` for quoting).
    public var description: String {
        switch self {
        case .int(let v): return String(v)
        case .double(let v): return formatDouble(v)
        case .bool(let v): return v ? "true" : "false"
        case .string(let s): return s
        case .null: return "null"
        }
    }
}

/// Shortest round-trip form of a double, always with a `.` before any exponent
/// (`1.0e-05`, `0.0003`, `10000.0`), so that YAML 1.1 readers (PyYAML) see a float.
func formatDouble(_ v: Double) -> String {
    if v.isNaN { return ".nan" }
    if v.isInfinite { return v < 0 ? "-.inf" : ".inf" }
    var s = String(v)                       // "1e-05", "0.0003", "10000.0"
    if let e = s.firstIndex(where: { $0 == "e" || $0 == "E" }), !s[..<e].contains(".") {
        s.insert(contentsOf: ".0", at: e)
    }
    return s
}

/// The type a key accepts.
public enum ConfigKind: Equatable, Sendable {
    case int, double, bool, string
    /// A string from a fixed set (`shared`/`indexed`, `gelu`/`swiglu`).
    case choice([String])

    /// "an integer", "a number", ... for error messages.
    var noun: String {
        switch self {
        case .int: return "an integer"
        case .double: return "a number"
        case .bool: return "true or false"
        case .string: return "a string"
        case .choice(let c): return "one of " + c.joined(separator: ", ")
        }
    }
}

/// One key of the table.
public struct ConfigKey: @unchecked Sendable {
    /// Dotted snake_case name: `name`, `model.d_model`, `moe.aux_loss_coef`, ...
    public let name: String
    public let kind: ConfigKind
    /// Whether `null` is allowed (the field is an Optional).
    public let optional: Bool
    let get: (RunConfig) -> ConfigValue
    /// Stores an already type-checked value.
    let set: (inout RunConfig, ConfigValue) -> Void

    /// `model` for `model.d_model`; "" for the top-level `name`.
    public var section: String {
        guard let dot = name.firstIndex(of: ".") else { return "" }
        return String(name[..<dot])
    }
    /// `d_model` for `model.d_model`.
    public var leaf: String {
        guard let dot = name.firstIndex(of: ".") else { return name }
        return String(name[name.index(after: dot)...])
    }
}

// MARK: - Constructors over key paths

private func intKey(_ n: String, _ kp: WritableKeyPath<RunConfig, Int>) -> ConfigKey {
    ConfigKey(name: n, kind: .int, optional: false, get: { .int($0[keyPath: kp]) },
              set: { c, v in if case .int(let x) = v { c[keyPath: kp] = x } })
}
private func optIntKey(_ n: String, _ kp: WritableKeyPath<RunConfig, Int?>) -> ConfigKey {
    ConfigKey(name: n, kind: .int, optional: true, get: { $0[keyPath: kp].map { .int($0) } ?? .null },
              set: { c, v in
                  if case .int(let x) = v { c[keyPath: kp] = x } else if v == .null { c[keyPath: kp] = nil }
              })
}
private func doubleKey(_ n: String, _ kp: WritableKeyPath<RunConfig, Double>) -> ConfigKey {
    ConfigKey(name: n, kind: .double, optional: false, get: { .double($0[keyPath: kp]) },
              set: { c, v in if case .double(let x) = v { c[keyPath: kp] = x } })
}
private func boolKey(_ n: String, _ kp: WritableKeyPath<RunConfig, Bool>) -> ConfigKey {
    ConfigKey(name: n, kind: .bool, optional: false, get: { .bool($0[keyPath: kp]) },
              set: { c, v in if case .bool(let x) = v { c[keyPath: kp] = x } })
}
private func stringKey(_ n: String, _ kp: WritableKeyPath<RunConfig, String>) -> ConfigKey {
    ConfigKey(name: n, kind: .string, optional: false, get: { .string($0[keyPath: kp]) },
              set: { c, v in if case .string(let x) = v { c[keyPath: kp] = x } })
}
private func optStringKey(_ n: String, _ kp: WritableKeyPath<RunConfig, String?>) -> ConfigKey {
    ConfigKey(name: n, kind: .string, optional: true, get: { $0[keyPath: kp].map { .string($0) } ?? .null },
              set: { c, v in
                  if case .string(let x) = v { c[keyPath: kp] = x } else if v == .null { c[keyPath: kp] = nil }
              })
}
private func choiceKey<E: RawRepresentable & CaseIterable>(_ n: String, _ kp: WritableKeyPath<RunConfig, E>) -> ConfigKey
where E.RawValue == String {
    ConfigKey(name: n, kind: .choice(E.allCases.map(\.rawValue)), optional: false,
              get: { .string($0[keyPath: kp].rawValue) },
              set: { c, v in if case .string(let x) = v, let e = E(rawValue: x) { c[keyPath: kp] = e } })
}

// MARK: - The table (SPEC section 1 order)

extension RunConfig {
    /// Every key, in the order of SPEC section 1 (the order of `toYAML`).
    public static let keys: [ConfigKey] = [
        stringKey("name", \.name),

        intKey("model.vocab_size", \.model.vocabSize),
        intKey("model.d_model", \.model.dModel),
        intKey("model.n_heads", \.model.nHeads),
        intKey("model.seq_len", \.model.seqLen),
        intKey("model.depth", \.model.depth),
        choiceKey("model.trunk", \.model.trunk),
        boolKey("model.depth_embedding", \.model.depthEmbedding),
        boolKey("model.tie_embeddings", \.model.tieEmbeddings),
        doubleKey("model.rope_base", \.model.ropeBase),
        doubleKey("model.norm_eps", \.model.normEps),

        intKey("moe.num_experts", \.moe.numExperts),
        intKey("moe.top_k", \.moe.topK),
        intKey("moe.d_ff", \.moe.dFF),
        choiceKey("moe.experts", \.moe.experts),
        choiceKey("moe.activation", \.moe.activation),
        boolKey("moe.normalize_gates", \.moe.normalizeGates),
        doubleKey("moe.capacity_factor", \.moe.capacityFactor),
        doubleKey("moe.aux_loss_coef", \.moe.auxLossCoef),
        doubleKey("moe.z_loss_coef", \.moe.zLossCoef),
        choiceKey("moe.router_score", \.moe.routerScore),
        doubleKey("moe.router_bias_rate", \.moe.routerBiasRate),
        choiceKey("moe.aux_scope", \.moe.auxScope),
        choiceKey("moe.routers", \.moe.routers),

        intKey("train.global_batch", \.train.globalBatch),
        intKey("train.micro_batch", \.train.microBatch),
        doubleKey("train.lr", \.train.lr),
        doubleKey("train.min_lr_ratio", \.train.minLrRatio),
        intKey("train.warmup_steps", \.train.warmupSteps),
        doubleKey("train.weight_decay", \.train.weightDecay),
        doubleKey("train.beta1", \.train.beta1),
        doubleKey("train.beta2", \.train.beta2),
        doubleKey("train.eps", \.train.eps),
        doubleKey("train.grad_clip", \.train.gradClip),
        intKey("train.seed", \.train.seed),
        optIntKey("train.data_seed", \.train.dataSeed),
        optIntKey("train.max_steps", \.train.maxSteps),
        optIntKey("train.max_tokens", \.train.maxTokens),
        intKey("train.eval_interval", \.train.evalInterval),
        intKey("train.eval_tokens", \.train.evalTokens),
        intKey("train.log_interval", \.train.logInterval),
        intKey("train.checkpoint_interval", \.train.checkpointInterval),
        intKey("train.keep_checkpoints", \.train.keepCheckpoints),

        optStringKey("data.train", \.data.train),
        optStringKey("data.valid", \.data.valid),
        optStringKey("data.tokenizer", \.data.tokenizer),

        optIntKey("parallel.expert_parallel", \.parallel.expertParallel),
        boolKey("parallel.balance_experts", \.parallel.balanceExperts),
        doubleKey("parallel.collective_timeout", \.parallel.collectiveTimeout),

        boolKey("gate.enabled", \.gate.enabled),
        doubleKey("gate.min_improvement", \.gate.minImprovement),
        intKey("gate.patience", \.gate.patience),
        intKey("gate.slope_window", \.gate.slopeWindow),
        doubleKey("gate.flat_slope", \.gate.flatSlope),
        doubleKey("gate.routing_tolerance", \.gate.routingTolerance),
        doubleKey("gate.promote_margin", \.gate.promoteMargin),
        doubleKey("gate.equal_tolerance", \.gate.equalTolerance),
        doubleKey("gate.entropy_margin", \.gate.entropyMargin),
        doubleKey("gate.max_load_margin", \.gate.maxLoadMargin),
        doubleKey("gate.throughput_margin", \.gate.throughputMargin),
        doubleKey("gate.noise_sigmas", \.gate.noiseSigmas),
    ]

    /// The YAML sections, in order.
    public static let sections = ["model", "moe", "train", "data", "parallel", "gate"]

    /// Key table lookup by dotted name.
    public static func key(named name: String) -> ConfigKey? { keyIndex[name].map { keys[$0] } }
    private static let keyIndex: [String: Int] =
        Dictionary(uniqueKeysWithValues: keys.enumerated().map { ($1.name, $0) })

    /// The value of a dotted key (`"moe.top_k"`), nil for an unknown key.
    public func value(forKey name: String) -> ConfigValue? { RunConfig.key(named: name)?.get(self) }

    /// The known key closest to `name` (edit distance on the dotted name, or on the leaf
    /// alone so that `model.top_k` suggests `moe.top_k`).
    public static func closestKey(to name: String) -> String {
        let leaf = name.split(separator: ".").last.map(String.init) ?? name
        // A truncated key ("moe.aux_loss") means the key it begins.
        if let k = keys.first(where: { $0.name.hasPrefix(name) && name.contains(".") }) { return k.name }
        var best = keys[0].name, bestScore = Int.max
        for k in keys {
            let score = min(editDistance(name, k.name), editDistance(leaf, k.leaf) + 1)
            if score < bestScore { best = k.name; bestScore = score }
        }
        for s in sections where editDistance(name, s) < bestScore { best = s; bestScore = editDistance(name, s) }
        return best
    }
}

/// Levenshtein distance over Characters.
func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var prev = Array(0 ... b.count), cur = [Int](repeating: 0, count: b.count + 1)
    for i in 1 ... a.count {
        cur[0] = i
        for j in 1 ... b.count {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&prev, &cur)
    }
    return prev[b.count]
}

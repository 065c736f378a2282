// Reading a run's configuration: a YAML file with sections model/moe/train/data/parallel
// (plus a top-level `name`), then dotted command-line overrides `moe.aux_loss_coef=0.02`
// applied in order. Anything unknown, mistyped or malformed is a ConfigError naming the key.
// Values are checked against the rules of SPEC section 1 separately, by `validate`.
import Foundation
import Yams

public enum ConfigLoader {
    /// Defaults, then the YAML file at `yamlPath` (if any), then `overrides` in order
    /// (each `key=value`, the value read as a YAML scalar; `null` unsets an optional key).
    /// Does not validate values: call `validate(_:worldSize:)` once the world size is known.
    public static func load(yamlPath: String?, overrides: [String]) throws -> RunConfig {
        var config = RunConfig()
        if let path = yamlPath {
            let text: String
            do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
                throw ConfigError(key: nil, origin: path, "cannot read the config file (\(error.localizedDescription))")
            }
            try apply(yaml: text, origin: path, to: &config)
        }
        try apply(overrides: overrides, to: &config)
        return config
    }

    /// `load` from YAML text instead of a file; `origin` names it in errors.
    public static func load(yamlText: String, origin: String = "<yaml>", overrides: [String] = []) throws -> RunConfig {
        var config = RunConfig()
        try apply(yaml: yamlText, origin: origin, to: &config)
        try apply(overrides: overrides, to: &config)
        return config
    }

    /// Applies a YAML (or JSON) document on top of `config`. Sections may be omitted or `null`;
    /// a dotted key (`moe.top_k: 1`) is also accepted at the top level.
    public static func apply(yaml text: String, origin: String, to config: inout RunConfig) throws {
        let root: Node?
        do { root = try Yams.compose(yaml: text) } catch { throw yamlError(error, origin: origin) }
        guard let root, !isNull(root) else { return }                   // empty file: defaults
        guard case .mapping(let top) = root else {
            throw ConfigError(key: nil, origin: at(origin, root),
                              "the top level must be a mapping with name and sections " + RunConfig.sections.joined(separator: ", "))
        }
        for (k, v) in top {
            let name = try keyName(k, origin: origin)
            if RunConfig.key(named: name) != nil {
                try set(name, v, origin: at(origin, k), in: &config)
            } else if RunConfig.sections.contains(name) {
                if isNull(v) { continue }
                guard case .mapping(let section) = v else {
                    throw ConfigError(key: name, origin: at(origin, v), "must be a mapping of \(name).* keys, got \(shape(v))")
                }
                for (k2, v2) in section {
                    let full = name + "." + (try keyName(k2, origin: origin))
                    guard RunConfig.key(named: full) != nil else { throw unknownKey(full, origin: at(origin, k2)) }
                    try set(full, v2, origin: at(origin, k2), in: &config)
                }
            } else {
                throw unknownKey(name, origin: at(origin, k))
            }
        }
    }

    /// Applies `key=value` overrides in order (later ones win).
    public static func apply(overrides: [String], to config: inout RunConfig) throws {
        for o in overrides {
            let origin = "override '\(o)'"
            guard let eq = o.firstIndex(of: "=") else {
                throw ConfigError(key: nil, origin: origin, "malformed: expected key=value, e.g. moe.aux_loss_coef=0.02")
            }
            let key = String(o[..<eq]).trimmingCharacters(in: .whitespaces)
            let text = String(o[o.index(after: eq)...])
            if key.hasPrefix("-") {
                throw ConfigError(key: nil, origin: origin, "malformed: write key=value without leading dashes, e.g. \(key.drop(while: { $0 == "-" }))=\(text)")
            }
            guard !key.isEmpty else {
                throw ConfigError(key: nil, origin: origin, "malformed: missing key before '=', e.g. moe.aux_loss_coef=0.02")
            }
            guard RunConfig.key(named: key) != nil else {
                if RunConfig.sections.contains(key) {
                    throw ConfigError(key: key, origin: origin, "is a section; override one of its keys, e.g. \(key).\(RunConfig.keys.first { $0.section == key }!.leaf)=...")
                }
                throw unknownKey(key, origin: origin)
            }
            guard !text.trimmingCharacters(in: .whitespaces).isEmpty else {
                throw ConfigError(key: key, origin: origin, "missing value after '=' (write \(key)=null to unset an optional key)")
            }
            let node: Node?
            do { node = try Yams.compose(yaml: text) } catch {
                throw ConfigError(key: key, origin: origin, "malformed value \(quoted(text)): not a YAML scalar")
            }
            try set(key, node ?? Node("null"), origin: origin, in: &config)
        }
    }

    // MARK: - Typing one value

    /// Type-checks `node` against the key's kind and stores it.
    static func set(_ name: String, _ node: Node, origin: String, in config: inout RunConfig) throws {
        let key = RunConfig.key(named: name)!
        guard case .scalar(let s) = node else {
            throw ConfigError(key: name, origin: origin, "must be \(key.kind.noun), got \(shape(node))")
        }
        key.set(&config, try typed(s, key: key, origin: origin))
    }

    static func typed(_ s: Node.Scalar, key: ConfigKey, origin: String) throws -> ConfigValue {
        let plain = s.style == .plain || s.style == .any
        let text = s.string
        if plain && ["", "~", "null", "Null", "NULL"].contains(text) {
            if key.optional { return .null }
            throw ConfigError(key: key.name, origin: origin, "must be \(key.kind.noun), got null (the key is not optional)")
        }
        func wrong() -> ConfigError {
            ConfigError(key: key.name, origin: origin, "must be \(key.kind.noun), got " + (plain ? text : "string " + quoted(text)))
        }
        switch key.kind {
        case .int:
            guard plain else { throw wrong() }
            let t = text.replacingOccurrences(of: "_", with: "")
            if let v = Int(t.hasPrefix("+") ? String(t.dropFirst()) : t) { return .int(v) }
            // Integral numbers written as floats (`max_tokens: 1e8`) are accepted.
            if let d = Double(t), d.isFinite, d == d.rounded(), abs(d) <= 9.007199254740992e15 { return .int(Int(d)) }
            throw wrong()
        case .double:
            guard plain else { throw wrong() }
            let t = text.replacingOccurrences(of: "_", with: "")
            let yamlSpecial: [String: Double] = [".inf": .infinity, "+.inf": .infinity, "-.inf": -.infinity, ".nan": .nan]
            guard let v = yamlSpecial[t.lowercased()] ?? Double(t.hasPrefix("+") ? String(t.dropFirst()) : t) else { throw wrong() }
            guard v.isFinite else { throw ConfigError(key: key.name, origin: origin, "must be a finite number, got \(text)") }
            return .double(v)
        case .bool:
            guard plain else { throw wrong() }
            switch text.lowercased() {
            case "true", "yes", "on": return .bool(true)
            case "false", "no", "off": return .bool(false)
            default: throw wrong()
            }
        case .string:
            return .string(text)
        case .choice(let cases):
            guard cases.contains(text) else { throw wrong() }
            return .string(text)
        }
    }

    // MARK: - Helpers

    static func unknownKey(_ name: String, origin: String) -> ConfigError {
        ConfigError(key: name, origin: origin, "unknown key (did you mean \(RunConfig.closestKey(to: name))?)")
    }

    private static func keyName(_ k: Node, origin: String) throws -> String {
        guard case .scalar(let s) = k else {
            throw ConfigError(key: nil, origin: at(origin, k), "a key must be a plain name, got \(shape(k))")
        }
        return s.string
    }

    private static func isNull(_ n: Node) -> Bool {
        guard case .scalar(let s) = n, s.style == .plain || s.style == .any else { return false }
        return ["", "~", "null", "Null", "NULL"].contains(s.string)
    }

    private static func shape(_ n: Node) -> String {
        switch n {
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        case .scalar(let s): return s.string
        }
    }

    /// `file:line` for a node.
    private static func at(_ origin: String, _ n: Node) -> String {
        guard let m = n.mark else { return origin }
        return "\(origin):\(m.line)"
    }

    private static func quoted(_ s: String) -> String { "\"" + s + "\"" }

    /// A Yams parse error as one line `file:line:col: problem`.
    private static func yamlError(_ error: Error, origin: String) -> ConfigError {
        guard let y = error as? YamlError else { return ConfigError(key: nil, origin: origin, "invalid YAML: \(error)") }
        switch y {
        case .scanner(let context, let problem, let mark, _),
             .parser(let context, let problem, let mark, _),
             .composer(let context, let problem, let mark, _):
            let ctx = context.map { " (\($0.text) at line \($0.mark.line))" } ?? ""
            return ConfigError(key: nil, origin: "\(origin):\(mark.line):\(mark.column)", "invalid YAML: \(problem)\(ctx)")
        case .duplicatedKeysInMapping(let duplicates, let context):
            return ConfigError(key: duplicates.first, origin: "\(origin):\(context.mark.line)",
                               "given twice in one mapping (\(duplicates.joined(separator: ", ")))")
        default:
            return ConfigError(key: nil, origin: origin, "invalid YAML: \(y)")
        }
    }
}

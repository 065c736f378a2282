// A resolved configuration as text: JSON (stored in checkpoints and metrics files,
// sorted keys) and YAML (printed at start, written to the run directory), both in the
// section layout of the input files, and both readable back. Plus the comparison that
// refuses to resume a checkpoint whose architecture differs.
import Foundation

/// One key whose value differs between two configurations.
public struct ConfigDifference: Equatable, Sendable, CustomStringConvertible {
    public var key: String
    public var old: ConfigValue
    public var new: ConfigValue
    /// `moe.num_experts: 40 -> 20`
    public var description: String { "\(key): \(old) -> \(new)" }
}

extension RunConfig {
    // MARK: JSON

    /// `{"data": {...}, "model": {"d_model": 512, ...}, "moe": {...}, "name": "...", "parallel": {...}, "train": {...}}`:
    /// every key (nil as `null`), keys sorted at both levels. One line unless `pretty`.
    public func toJSON(pretty: Bool = false) -> String {
        var top: [(String, String)] = []
        for key in RunConfig.keys where key.section.isEmpty { top.append((key.name, jsonValue(key.get(self)))) }
        for section in RunConfig.sections {
            let members = RunConfig.keys.filter { $0.section == section }.sorted { $0.leaf < $1.leaf }
            let body = members.map { "\(jsonString($0.leaf)): \(jsonValue($0.get(self)))" }
            let inner = pretty ? "{\n    " + body.joined(separator: ",\n    ") + "\n  }" : "{" + body.joined(separator: ", ") + "}"
            top.append((section, inner))
        }
        top.sort { $0.0 < $1.0 }
        let items = top.map { "\(jsonString($0.0)): \($0.1)" }
        return pretty ? "{\n  " + items.joined(separator: ",\n  ") + "\n}" : "{" + items.joined(separator: ", ") + "}"
    }

    /// Reads `toJSON` output (or any JSON object of the same layout; missing keys keep their
    /// defaults). Unknown keys and wrong types are ConfigErrors, as for YAML.
    public static func fromJSON(_ json: String) throws -> RunConfig {
        // JSON is YAML flow syntax, so the YAML reader (and its key/type checks) serves.
        try ConfigLoader.load(yamlText: json, origin: "JSON")
    }

    // MARK: YAML

    /// The configuration as a YAML file that `ConfigLoader` reads back to an equal value:
    /// `name`, then the sections in SPEC order, one `key: value` per line.
    public func toYAML() -> String {
        var out = "# moe-dist run configuration (resolved)\n"
        for key in RunConfig.keys where key.section.isEmpty { out += "\(key.name): \(yamlValue(key.get(self)))\n" }
        for section in RunConfig.sections {
            out += "\(section):\n"
            for key in RunConfig.keys where key.section == section {
                out += "  \(key.leaf): \(yamlValue(key.get(self)))\n"
            }
        }
        return out
    }

    // MARK: Differences

    /// Keys of `model.*` and `moe.*` that decide the parameters and the function computed:
    /// all of them except the loss weights and the capacity factor, which a resumed run may change.
    public static let architectureKeys: [String] = keys.map(\.name).filter {
        ($0.hasPrefix("model.") || $0.hasPrefix("moe."))
            && !["moe.aux_loss_coef", "moe.z_loss_coef", "moe.capacity_factor", "moe.router_bias_rate",
                 "moe.aux_scope"].contains($0)
    }

    /// Every key whose value in `self` differs from `other`, in table order.
    public func differences(from other: RunConfig) -> [ConfigDifference] {
        RunConfig.keys.compactMap { k in
            let a = k.get(other), b = k.get(self)
            return a == b ? nil : ConfigDifference(key: k.name, old: a, new: b)
        }
    }

    /// The architecture keys (`architectureKeys`) whose value in `self` differs from `other`
    /// (e.g. a checkpoint's config): non-empty means the checkpoint cannot be resumed.
    public func architectureDifferences(from other: RunConfig) -> [String] {
        let arch = Set(RunConfig.architectureKeys)
        return differences(from: other).map(\.key).filter { arch.contains($0) }
    }
}

// MARK: - Value text

private func jsonValue(_ v: ConfigValue) -> String {
    if case .string(let s) = v { return jsonString(s) }
    return v.description
}

/// A JSON string literal (also a valid YAML double-quoted scalar).
func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
        default: out.unicodeScalars.append(u)
        }
    }
    return out + "\""
}

/// Strings stay plain when YAML would read them back as the same string; otherwise quoted.
private func yamlValue(_ v: ConfigValue) -> String {
    guard case .string(let s) = v else { return v.description }
    let safe = !s.isEmpty && s.unicodeScalars.allSatisfy {
        CharacterSet.alphanumerics.contains($0) && $0.isASCII || "_-./".unicodeScalars.contains($0)
    }
    let special = ["null", "~", "true", "false", "yes", "no", "on", "off"].contains(s.lowercased())
        || Double(s.replacingOccurrences(of: "_", with: "")) != nil || s.hasPrefix("-") || s.hasPrefix(".")
    return safe && !special ? s : jsonString(s)
}

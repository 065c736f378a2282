// The one error type of this module: a bad key, type, value or override, as ONE line
// that names the key, where it came from and the rule that failed.
import Foundation

/// A configuration error. `description` is a single line such as
/// `jobs/configs/tiny.yaml:7: moe.top_k: must be an integer, got "two"` or
/// `moe.top_k: must be <= moe.num_experts (40), got 41`.
public struct ConfigError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The dotted key at fault (`moe.top_k`), or nil when no single key is (an unreadable file).
    public var key: String?
    /// Where the value came from: a file (with `:line` when known), `override 'k=v'`, `JSON`; nil for validation.
    public var origin: String?
    /// The rule that failed, e.g. `must be >= 1, got 0`.
    public var message: String

    public init(key: String?, origin: String? = nil, _ message: String) {
        self.key = key; self.origin = origin; self.message = message
    }

    public var description: String {
        var parts: [String] = []
        if let o = origin { parts.append(o) }
        if let k = key { parts.append(k) }
        parts.append(message)
        // One line, whatever the parts hold (YAML parser messages can carry newlines).
        return parts.joined(separator: ": ")
            .split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .joined(separator: " ")
    }
}

// A hidden test hook: `--inject-failure RANK:STEP` makes rank RANK throw at optimizer step STEP,
// so the tests can check that an error on one rank ends the whole job with its message.
import Foundation

struct InjectedFailure: Error, CustomStringConvertible {
    var rank: Int, step: Int
    var description: String { "injected failure at step \(step)" }

    /// Parses `RANK:STEP`.
    static func parse(_ text: String?) throws -> (rank: Int, step: Int)? {
        guard let text else { return nil }
        let parts = text.split(separator: ":").compactMap { Int($0) }
        guard parts.count == 2 else { throw UserError("--inject-failure: expected RANK:STEP, got \(text)") }
        return (parts[0], parts[1])
    }
}

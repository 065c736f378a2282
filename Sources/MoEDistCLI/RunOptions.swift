// Options shared by every command that builds a run from a configuration.
import ArgumentParser
import Configuration

struct RunOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("YAML configuration file (presets in jobs/configs/).", valueName: "file"))
    var config: String

    @Argument(help: ArgumentHelp("Dotted overrides applied after the file, e.g. moe.top_k=1 train.max_steps=50.",
                                 valueName: "key=value"))
    var overrides: [String] = []

    /// The configuration file plus overrides, not yet validated against a world size.
    func load() throws -> RunConfig {
        try ConfigLoader.load(yamlPath: config, overrides: overrides)
    }
}

/// A user-facing failure: printed as one `moe-dist: …` line, exit status 2 (bad input) or 1.
struct UserError: Error, CustomStringConvertible {
    var description: String
    var status: Int32 = 2
    init(_ d: String, status: Int32 = 2) { description = d; self.status = status }
}

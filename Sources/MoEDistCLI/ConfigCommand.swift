// `moe-dist config`: the configuration keys (defaults, valid values, meaning), or the values a
// run of a preset would use. The same table generates docs/configuration.md (--markdown).
import Foundation
import ArgumentParser
import Configuration
import DataPipeline

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "List the configuration keys, or print a configuration's resolved values.",
        discussion: reflow("""
        Examples:
          moe-dist config
          moe-dist config --config jobs/configs/cpu-small.yaml --world 4 moe.top_k=1
          moe-dist config --markdown > docs/configuration.md

        Without --config: every key with its type, default, valid values and meaning. With --config: the
        resolved configuration as YAML (file, then overrides), checked for --world ranks (default 1) with
        the micro-batch fitted as train would fit it; model.vocab_size 0 is filled in from data.train
        when that file exists.
        """))

    @Option(help: ArgumentHelp("YAML configuration file to resolve (presets in jobs/configs/).", valueName: "file"))
    var config: String?

    @Option(help: ArgumentHelp("World size to check the configuration for.", valueName: "N"))
    var world: Int = 1

    @Flag(help: "Print the key reference as Markdown (docs/configuration.md).")
    var markdown = false

    @Argument(help: ArgumentHelp("Dotted overrides applied after the file, e.g. moe.top_k=1.", valueName: "key=value"))
    var overrides: [String] = []

    func validate() throws {
        guard world >= 1 else { throw ValidationError("--world: must be at least 1, got \(world)") }
        if config == nil && !overrides.isEmpty {
            throw ValidationError("overrides need --config (they apply to a configuration file)")
        }
    }

    func run() throws {
        try failingCleanly {
            if markdown { print(RunConfig.referenceMarkdown(), terminator: ""); return }
            guard let path = config else { print(Self.keyList()); return }
            var c = try ConfigLoader.load(yamlPath: path, overrides: overrides)
            if c.model.vocabSize == 0, let train = c.data.train, FileManager.default.fileExists(atPath: train) {
                c.model.vocabSize = try TokenFile(path: train, checkIDs: false).vocabSize
            }
            let note = try c.fitMicroBatch(worldSize: world)
            try Configuration.validate(c, worldSize: world)
            print("# \(path)" + (overrides.isEmpty ? "" : " " + overrides.joined(separator: " ")) + ", \(world) rank(s)")
            if let n = note { print("# " + n) }
            if c.model.vocabSize == 0 { print("# model.vocab_size 0: set from data.train when the run starts") }
            print(c.toYAML(), terminator: "")
        }
    }

    /// One block per key: name, type, default, values, meaning (wrapped for 80 columns).
    static func keyList() -> String {
        var lines: [String] = []
        for k in RunConfig.keys {
            let d = RunConfig.keyDocs[k.name]
            lines.append("\(k.name) (\(RunConfig.typeText(k)), default \(RunConfig.defaultText(k)))")
            lines += wrap(d?.meaning ?? "", indent: "    ")
            lines += wrap("values: " + (d?.values ?? ""), indent: "    ")
        }
        return lines.joined(separator: "\n")
    }
}

/// Words of `text` in lines of at most `width` columns, each starting with `indent`.
func wrap(_ text: String, indent: String = "", width: Int = 80) -> [String] {
    var lines: [String] = [], line = indent
    for word in text.split(separator: " ") {
        if line.count > indent.count && line.count + 1 + word.count > width { lines.append(line); line = indent }
        line += (line.count > indent.count ? " " : "") + word
    }
    if line.count > indent.count { lines.append(line) }
    return lines
}

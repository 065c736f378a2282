import ArgumentParser

/// `moe-dist debug ...`: tools for single-rank debugging.
struct DebugCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "debug", abstract: "Debugging tools: gradient checks, collective self-tests.",
        subcommands: [GradCheckCommand.self, DebugGradsCommand.self, DebugCollectivesCommand.self])
}

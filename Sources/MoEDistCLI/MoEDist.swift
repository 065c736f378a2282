// moe-dist: the command-line entry point. Each subcommand lives in its own file.
import ArgumentParser

@main
struct MoEDist: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "moe-dist",
        abstract: "Train recurrent Mixture-of-Experts language models with expert parallelism over MPI.",
        subcommands: [TrainCommand.self, DataCommand.self, DebugCommand.self, BenchCommand.self, EstimateCommand.self])
}

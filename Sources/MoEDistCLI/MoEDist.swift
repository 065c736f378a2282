// moe-dist: the command-line entry point. Each subcommand lives in its own file.
import ArgumentParser

@main
struct MoEDist: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "moe-dist",
        abstract: "Train recurrent Mixture-of-Experts language models with expert parallelism over MPI.",
        subcommands: [TrainCommand.self, EvalCommand.self, CheckpointCommand.self, GateCommand.self, SweepCommand.self,
                      CompareCommand.self, CurvesCommand.self, BenchCommand.self, EstimateCommand.self, ConfigCommand.self,
                      DataCommand.self, DebugCommand.self])
}

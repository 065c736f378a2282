// moe-dist: the command-line entry point. Each subcommand lives in its own file.
import ArgumentParser
import Kernels

@main
struct MoEDist: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "moe-dist",
        abstract: "Train recurrent Mixture-of-Experts language models with expert parallelism over MPI.",
        subcommands: [TrainCommand.self, EvalCommand.self, CheckpointCommand.self, GateCommand.self, SweepCommand.self,
                      CompareCommand.self, CurvesCommand.self, BenchCommand.self, EstimateCommand.self,
                      DataCommand.self, DebugCommand.self])

    /// Chooses the BLAS kernels before anything else runs (no product, no MPI_Init yet), then runs the
    /// command. Help and usage errors pay nothing: the choice is made only for a parsed command.
    static func main() {
        do {
            var command = try parseAsRoot()
            if !(command is MoEDist) { BlasKernelSelection.atStart() }
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}

// moe-dist: the command-line entry point. Each subcommand lives in its own file.
import ArgumentParser
import Kernels
import Foundation

@main
struct MoEDist: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "moe-dist",
        abstract: "Train recurrent Mixture-of-Experts language models with expert parallelism over MPI.",
        discussion: """
        Exit statuses, the same in every command (docs/exit-status.md):
          0   done (gate: whatever the decisions)
          1   runtime failure: I/O or HDF5 error, a failed rank
          2   usage or configuration error: bad option, unknown key,
              impossible value, changed configuration on resume
          3   bad data: an input file that is missing, damaged, or
              from another tokenizer or vocabulary
          75  preempted: checkpoint written, resume with --resume auto
        """,
        subcommands: [TrainCommand.self, EvalCommand.self, CheckpointCommand.self, GateCommand.self, SweepCommand.self,
                      CompareCommand.self, CurvesCommand.self, BenchCommand.self, EstimateCommand.self, ConfigCommand.self,
                      DataCommand.self, DebugCommand.self, SampleCommand.self, RouteCommand.self, ExportCommand.self])

    /// Chooses the BLAS kernels before anything else runs (no product, no MPI_Init yet), then runs the
    /// command; help and usage errors pay nothing. A usage error (ArgumentParser's status 64) exits with 2,
    /// as configuration errors do: one table of exit statuses for every command (docs/exit-status.md).
    static func main() {
        // An unknown command is a usage error, even with --help after it (ArgumentParser would print the
        // root help and exit 0 for `moe-dist frobnicate --help`).
        let args = CommandLine.arguments.dropFirst()
        if let first = args.first, !first.hasPrefix("-") {
            let names = configuration.subcommands.map { $0._commandName } + ["help"]
            if !names.contains(first) {
                FileHandle.standardError.write(Data(("moe-dist: unknown command '\(first)'; the commands are "
                                                     + names.dropLast().joined(separator: ", ")
                                                     + " (moe-dist --help)\n").utf8))
                Foundation.exit(ExitStatus.usage)
            }
        }
        do {
            var command = try parseAsRoot()
            if !(command is MoEDist) { BlasKernelSelection.atStart() }
            try command.run()
        } catch {
            let code = exitCode(for: error)
            if code == .validationFailure {
                FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
                Foundation.exit(ExitStatus.usage)
            }
            exit(withError: error)
        }
    }
}

// `moe-dist ckpt inspect|verify FILE`: what a checkpoint holds, and whether it is intact.
import Foundation
import ArgumentParser
import Configuration
import DataPipeline
import Training

struct CheckpointCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ckpt", abstract: "Inspect or verify checkpoint files.",
        subcommands: [Inspect.self, Verify.self])

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a checkpoint's step, tokens, world size, configuration and tensors (shape, L2 norm).")
        @Argument(help: ArgumentHelp("Checkpoint file (.h5).", valueName: "file")) var file: String

        func run() throws {
            try failingCleanly {
                let st: CheckpointState
                do { st = try Checkpoint.readState(file) } catch let e as CheckpointMissingError { throw e } catch {
                    throw DataError("checkpoint \(file): cannot read it: \(error)")
                }
                print("checkpoint \(file)")
                print("step \(st.counters.step), tokens \(st.counters.tokens), updates \(st.counters.updates), "
                      + "nan events \(st.counters.nanEvents), written by \(st.worldSize) rank(s)")
                print("tokenizer fingerprint " + (st.tokenizerFingerprint == 0 ? "0 (unknown: generated corpus or old files)"
                                                  : TokenizerFingerprint.hex(st.tokenizerFingerprint)))
                print("configuration:")
                print(st.config.toYAML().split(separator: "\n").map { "  " + $0 }.joined(separator: "\n"))
                print("tensors:")
                for t in try Checkpoint.tensorSummaries(file) {
                    print(String(format: "  %-28@ %-16@ norm %.6g", t.path as NSString,
                                 t.shape.map(String.init).joined(separator: "x") as NSString, t.norm))
                }
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a checkpoint end to end (format, attributes, shapes, Fletcher-32 checksums of every tensor).",
            discussion: "Exit status 0: intact. 3 (bad data): missing, damaged or not a checkpoint (the reason is printed).")
        @Argument(help: ArgumentHelp("Checkpoint file (.h5).", valueName: "file")) var file: String

        func run() throws {
            do {
                try Checkpoint.verify(file)
                print("\(file): intact")
            } catch {
                printError("\(error)")
                throw ExitCode(ExitStatus.badData)
            }
        }
    }
}

import Foundation
import ArgumentParser
import DataPipeline
import Training

struct DebugGradsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grads",
        abstract: "Dump the gradient of one micro-batch to HDF5, for comparison with other implementations.",
        discussion: reflow("""
        Sequence b of the batch has inputs x[o + b·T ..< o + b·T + T] of the token file and the next tokens as
        targets; the output holds /grads/<path> for every parameter and root attributes loss, ce, aux, z.
        The file format is in docs/file-formats.md.
        Example (the README's WikiText-2 run):
          moe-dist debug grads --batch 4 --offset 0 --out grads.h5 \\
              --checkpoint runs/wt2-cpu-small/checkpoints/step-00000500.h5 \\
              --data data/wt2/valid.tok
        """))

    @Option(help: ArgumentHelp("Checkpoint file.", valueName: "file")) var checkpoint: String
    @Option(help: ArgumentHelp("Token file (moe-dist data prepare / encode).", valueName: "file")) var data: String
    @Option(help: "Sequences in the micro-batch.") var batch: Int = 1
    @Option(help: "Token offset o of the first sequence.") var offset: Int = 0
    @Option(help: ArgumentHelp("Output HDF5 file (written atomically).", valueName: "file")) var out: String

    func run() throws {
        try failingCleanly {
            let tokens = try TokenFile(path: data)
            let r = try GradientDump.write(checkpoint: checkpoint, data: tokens, batch: batch, offset: offset, to: out)
            print(String(format: "wrote %@: loss %.6f (ce %.6f, aux %.6f, z %.6f)", out, r.loss, r.ce, r.aux, r.z))
        }
    }
}

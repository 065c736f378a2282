import Foundation
import ArgumentParser
import DataPipeline
import Training

struct DebugGradsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grads",
        abstract: "Dump the gradient of one micro-batch to HDF5 (SPEC section 9), for comparison with other implementations.",
        discussion: """
        Sequence b of the batch has inputs x[o + b·T ..< o + b·T + T] of the token file and the next tokens as
        targets; the output holds /grads/<path> for every parameter and root attributes loss, ce, aux, z.
        Example: moe-dist debug grads --checkpoint runs/tiny/checkpoints/step-00000200.h5 --data valid.tok \\
                 --batch 4 --offset 0 --out grads.h5
        """)

    @Option(help: ArgumentHelp("Checkpoint file.", valueName: "file")) var checkpoint: String
    @Option(help: ArgumentHelp("Token file (SPEC section 8).", valueName: "file")) var data: String
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

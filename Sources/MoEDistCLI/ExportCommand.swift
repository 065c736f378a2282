// `moe-dist export`: model.safetensors, config.json, tokenizer.json and a README from a checkpoint.
import Foundation
import ArgumentParser
import Training

struct ExportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "export",
        abstract: "Export a checkpoint as safetensors + config.json + tokenizer.json for PyTorch / Hugging Face users.",
        discussion: reflow("""
        Writes OUT/model.safetensors (every parameter, named by its path with "/" as ".", float32), \
        OUT/config.json (the run's model and moe keys), OUT/tokenizer.json (the run's data.tokenizer, or \
        --tokenizer; its fingerprint must match the checkpoint's) and OUT/README.md. The format: \
        docs/export-format.md; python/moe_dist_torch loads it. One rank reads every expert, whatever world \
        size wrote the checkpoint. The checkpoint is verified first (every tensor's Fletcher-32 checksum): a \
        damaged one is refused with exit status 3, and nothing is written. Each file appears whole or not \
        at all.

        Example (the README's WikiText-2 run):
          moe-dist export \\
              --checkpoint runs/wt2-cpu-small/checkpoints/step-00000500.h5 \\
              --out exports/wt2-cpu-small
        """))

    @Option(help: ArgumentHelp("Checkpoint file (RUN_DIR/checkpoints/step-N.h5).", valueName: "file.h5"))
    var checkpoint: String
    @Option(help: ArgumentHelp("Output directory (created if missing; files in it are replaced).", valueName: "dir"))
    var out: String
    @Option(help: ArgumentHelp("tokenizer.json to export instead of the checkpoint's data.tokenizer.", valueName: "file"))
    var tokenizer: String?

    func run() throws {
        try failingCleanly {
            let s = try ModelExport.export(checkpoint: checkpoint, to: out, tokenizer: tokenizer)
            for note in s.notes { printError("note: " + note) }
            print("\(out): \(s.tensors) tensors, \(s.parameters) parameters; " + s.files.map { URL(fileURLWithPath: $0).lastPathComponent }.joined(separator: ", "))
        }
    }
}

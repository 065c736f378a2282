// `moe-dist eval`: SPEC section 5 on a checkpoint and a token file, at any world size.
import Foundation
import ArgumentParser
import Collectives
import DataPipeline
import Training

struct EvalCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval",
        abstract: "Score a token file with a checkpoint: loss (mean NLL), perplexity, scored tokens.",
        discussion: reflow("""
        The model is built from the checkpoint's stored configuration; each rank loads only its experts.
        Windows start at 0, T, 2T, ...; the first M tokens give M - 1 scored targets; routing is dropless,
        so the result is the same at every world size (up to summation order).
        Output: `loss 4.6158 | ppl 101.070 | 2047 tokens scored | CHECKPOINT | DATA`, or with --json
        {"loss": x, "ppl": x, "scored": n, "checkpoint": "...", "data": "..."}; a progress line (targets
        scored, rate, ETA) goes to standard error.
        The token file must come from the tokenizer the checkpoint was trained with (SPEC section 8
        fingerprints; a file without one is scored with a warning). Exit statuses: docs/exit-status.md.
        Examples (the README's WikiText-2 run):
          moe-dist eval --checkpoint runs/wt2-cpu-small/checkpoints/step-00000500.h5 \\
              --data data/wt2/test.tok
          mpirun -np 2 moe-dist eval --max-tokens 13299 --json \\
              --checkpoint runs/wt2-cpu-small/checkpoints/step-00000500.h5 \\
              --data data/wt2/valid.tok
        """))

    @Option(help: ArgumentHelp("Checkpoint file (RUN_DIR/checkpoints/step-N.h5).", valueName: "file.h5"))
    var checkpoint: String

    @Option(help: ArgumentHelp("Token file to score.", valueName: "file.tok"))
    var data: String

    @Option(help: ArgumentHelp("Score the first M tokens (M - 1 targets); default: the whole file.", valueName: "M"))
    var maxTokens: Int?

    @Flag(help: "Print one JSON object.")
    var json = false

    @Option(help: ArgumentHelp("Run N ranks as threads in this process.", valueName: "N"))
    var emulateRanks: Int?

    func validate() throws {
        if let m = maxTokens, m < 2 { throw ValidationError("--max-tokens must be at least 2, got \(m)") }
        if let n = emulateRanks, n < 1 { throw ValidationError("--emulate-ranks must be at least 1, got \(n)") }
    }

    func run() throws {
        try failingCleanly {
            // Inputs are checked before any rank starts, so bad ones give one line and exit status 3 (bad data).
            let state = try CheckpointEvaluation.readState(checkpoint)
            let file = try CheckpointEvaluation.openTokens(data, state: state, checkpoint: checkpoint)
            if file.fingerprint == 0 { printError(TokenizerFingerprint.unknownWarning(data)) }
            try Launch.onEveryRank(emulateRanks: emulateRanks) { world in
                Launch.watchCollectives(world, timeout: state.config.parallel.collectiveTimeout)
                let tokens = try TokenFile(path: data, checkIDs: false)   // its ids were checked above
                // Rank 0 draws a progress line on stderr (targets scored, rate, ETA); stdout keeps only the result.
                let line = world.rank == 0 ? ProgressLine("eval", unit: .items("tokens")) : nil
                var started = false
                let r = try CheckpointEvaluation.evaluate(checkpoint: checkpoint, tokens: tokens, maxTokens: maxTokens,
                                                          world: world, ranksInProcess: emulateRanks ?? 1) { done, total in
                    guard let line else { return }
                    if !started { line.start(total: Int64(total)); started = true }
                    if done >= total { line.finish() } else { line.update(Int64(done)) }
                }
                guard world.rank == 0 else { return }
                if json {
                    let obj: [String: Any] = ["loss": r.loss, "ppl": r.ppl, "scored": r.scored, "checkpoint": checkpoint, "data": data]
                    print(jsonText(obj))
                } else {
                    print(String(format: "loss %.6f | ppl %.4f | %d tokens scored | %@ | %@",
                                 r.loss, r.ppl, r.scored, checkpoint, data))
                }
                fflush(stdout)
            }
        }
    }
}

/// One-line JSON with sorted keys (non-finite numbers become null).
func jsonText(_ value: Any, pretty: Bool = false) -> String {
    func clean(_ v: Any) -> Any {
        switch v {
        case let d as Double: return d.isFinite ? d : NSNull()
        case let a as [Any]: return a.map(clean)
        case let m as [String: Any]: return m.mapValues(clean)
        default: return v
        }
    }
    var options: JSONSerialization.WritingOptions = [.sortedKeys, .withoutEscapingSlashes]
    if pretty { options.insert(.prettyPrinted) }
    let data = try! JSONSerialization.data(withJSONObject: clean(value), options: options)
    return String(decoding: data, as: UTF8.self)
}

/// A JSON value for an optional number (null when absent or non-finite).
func jsonNumber(_ x: Double?) -> Any { x.map { $0.isFinite ? $0 as Any : NSNull() } ?? NSNull() }
func jsonNumber(_ x: Int?) -> Any { x.map { $0 as Any } ?? NSNull() }

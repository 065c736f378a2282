// `moe-dist sample`: text from a checkpoint, one rank, whatever world size wrote it; streamed token by token,
// with a key/value cache per recurrent iteration (TokenGenerator).
import Foundation
import ArgumentParser
import DataPipeline
import Kernels
import Model
import Training

struct SampleCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sample",
        abstract: "Generate text from a checkpoint (streamed; greedy, temperature, top-k, top-p).",
        discussion: reflow("""
        The prompt is encoded with the checkpoint's tokenizer (its data.tokenizer, or --tokenizer; the \
        tokenizer fingerprint must match the checkpoint's, SPEC section 8). Each new token is written to \
        standard output as soon as it is chosen; the prompt is printed first. A summary (tokens, seconds, \
        tokens/s) goes to standard error. Runs on one rank and reads every expert, whatever world size wrote \
        the checkpoint.

        Each token costs one row through every recurrent iteration: the rotated keys and values of every \
        iteration are kept (--no-cache recomputes the whole window per token, for comparison).

        Past model.seq_len: the model only sees positions 0 ..< seq_len, those it was trained on. A longer \
        prompt is cut to its last seq_len tokens (with a warning). When the window is full, it slides: the \
        newest seq_len/2 tokens are kept, the cache is rebuilt from them, and generation goes on.

        --temperature 0 is greedy (the same text every time). Otherwise sample i of --count uses seed \
        --seed + i, so a seed fixes the text. With --json, one object per sample per line: \
        {"sample", "seed", "prompt_ids", "ids", "text", "seconds", "tokens_per_sec"}.

        Examples (the README's WikiText-2 run):
          moe-dist sample \\
              --checkpoint runs/wt2-cpu-small/checkpoints/step-00000500.h5 \\
              --prompt " The history of the" --max-new-tokens 60 \\
              --temperature 0.8 --top-k 40
          moe-dist sample \\
              --checkpoint runs/wt2-cpu-small/checkpoints/step-00000500.h5 \\
              --prompt " The" --temperature 0 --max-new-tokens 20 --json
        """))

    @Option(help: ArgumentHelp("Checkpoint file (RUN_DIR/checkpoints/step-N.h5).", valueName: "file.h5"))
    var checkpoint: String
    @Option(help: ArgumentHelp("Prompt text.", valueName: "text"))
    var prompt: String?
    @Option(name: .customLong("prompt-file"), help: ArgumentHelp("Read the prompt from a UTF-8 file.", valueName: "file"))
    var promptFile: String?
    @Option(name: .customLong("max-new-tokens"), help: ArgumentHelp("Tokens to generate per sample.", valueName: "n"))
    var maxNewTokens = 100
    @Option(help: ArgumentHelp("Softmax temperature; 0 = greedy.", valueName: "t"))
    var temperature = 1.0
    @Option(name: .customLong("top-k"), help: ArgumentHelp("Draw among the k most likely tokens only (0 = all).", valueName: "k"))
    var topK = 0
    @Option(name: .customLong("top-p"), help: ArgumentHelp("Draw among the smallest set of tokens whose probability reaches p.", valueName: "p"))
    var topP = 1.0
    @Option(help: ArgumentHelp("Random seed (sample i uses seed + i).", valueName: "n"))
    var seed: UInt64 = 1234
    @Option(help: ArgumentHelp("Number of samples.", valueName: "n"))
    var count = 1
    @Option(help: ArgumentHelp("tokenizer.json to use instead of the checkpoint's data.tokenizer.", valueName: "file"))
    var tokenizer: String?
    @Flag(name: .customLong("no-cache"), help: "Recompute the whole window for every token (slow; for comparison).")
    var noCache = false
    @Flag(help: "Print one JSON object per sample instead of streaming text.")
    var json = false

    func validate() throws {
        if (prompt == nil) == (promptFile == nil) { throw ValidationError("give exactly one of --prompt and --prompt-file") }
        if maxNewTokens < 1 { throw ValidationError("--max-new-tokens must be at least 1, got \(maxNewTokens)") }
        if !(temperature >= 0) || !temperature.isFinite { throw ValidationError("--temperature must be >= 0, got \(temperature)") }
        if topK < 0 { throw ValidationError("--top-k must be >= 0, got \(topK)") }
        if !(topP > 0 && topP <= 1) { throw ValidationError("--top-p must be in (0, 1], got \(topP)") }
        if count < 1 { throw ValidationError("--count must be at least 1, got \(count)") }
    }

    func run() throws {
        try failingCleanly {
            let text: String
            if let p = promptFile {
                guard let data = FileManager.default.contents(atPath: p) else { throw DataFileError(p, "cannot read the prompt file") }
                guard let s = String(data: data, encoding: .utf8) else { throw DataFileError(p, "the prompt file is not UTF-8") }
                text = s
            } else { text = prompt! }
            let state = try CheckpointEvaluation.readState(checkpoint)
            let (tok, _) = try CheckpointInference.tokenizer(for: state, checkpoint: checkpoint, explicit: tokenizer)
            let ids = tok.encode(text)
            guard !ids.isEmpty else { throw UserError("the prompt is empty: at least one token is needed to predict the next") }
            Launch.configureBLASThreads()
            let (model, _) = try CheckpointInference.load(checkpoint)
            let gen = TokenGenerator(model: model)
            if ids.count > model.contextLimit {
                printError("warning: the prompt has \(ids.count) tokens; the model sees its last \(model.contextLimit) (model.seq_len)")
            }
            let out = FileHandle.standardOutput
            for i in 0 ..< count {
                let s = seed &+ UInt64(i)
                var sampler = Sampler(SamplingOptions(temperature: temperature, topK: topK, topP: topP, seed: s))
                if !json {
                    if count > 1 { print("--- sample \(i + 1) of \(count) (seed \(s)) ---") }
                    fflush(stdout)
                    out.write(Data(tok.decode(gen.initialWindow(ids))))
                }
                let start = DispatchTime.now().uptimeNanoseconds
                let newIDs = gen.generate(prompt: ids, maxNewTokens: maxNewTokens, sampler: &sampler, cached: !noCache) { id in
                    if !json { out.write(Data(tok.decode([id]))) }
                    return true
                }
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                let rate = Double(newIDs.count) / max(seconds, 1e-9)
                if json {
                    let obj: [String: Any] = ["sample": i, "seed": Int(s), "prompt_ids": ids.map(Int.init), "ids": newIDs.map(Int.init),
                                              "text": tok.decodeString(newIDs), "seconds": seconds, "tokens_per_sec": rate]
                    print(jsonText(obj))
                } else {
                    print("")
                }
                fflush(stdout)
                FileHandle.standardError.write(Data(String(format: "sample %d: %d prompt + %d new tokens in %.3f s (%.1f tokens/s, %@)\n",
                                                           i + 1, ids.count, newIDs.count, seconds, rate, noCache ? "no cache" : "cached").utf8))
            }
        }
    }
}

// `moe-dist route`: where each token of a text goes, at every recurrent iteration (one rank, any checkpoint).
import Foundation
import ArgumentParser
import DataPipeline
import HDF5
import Model
import Training

struct RouteCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "route",
        abstract: "Show the experts, gates, router entropy and drops of every token at every recurrent iteration.",
        discussion: reflow("""
        The text (--text, or --count tokens of a token file from --offset) runs through the model as one \
        sequence of at most model.seq_len tokens. For every token and iteration: the top-k experts and their \
        gates (descending), the entropy of the router's probabilities (nats; ln E is uniform), and whether \
        the assignment was dropped. Drops follow moe.capacity_factor as in training, with the text as the \
        micro-batch (capacity ceil(c·k·N/E) per expert, in slot then token order); a dropless run \
        (capacity_factor 0) drops nothing. The last line gives the cross-iteration agreement: the mean over \
        tokens of |K_r ∩ K_r+1| / k (shared expert pools only).

        --json prints every array (experts and gates [R][N][k], dropped [R][N][k], entropy [R][N], \
        agreement [R-1], tokens and their text pieces); --h5 FILE writes the same arrays as HDF5 datasets \
        (notebooks/routing_trace.ipynb draws them). Dense checkpoints have no routing (exit status 2).

        Examples (the README's WikiText-2 run):
          moe-dist route --checkpoint runs/wt2-cpu-small/checkpoints/step-00000500.h5 \\
              --text " The history of the city begins in the Roman period ."
          moe-dist route --checkpoint runs/wt2-cpu-small/checkpoints/step-00000500.h5 \\
              --data data/wt2/valid.tok --offset 0 --count 16 --h5 reports/route.h5
        """))

    @Option(help: ArgumentHelp("Checkpoint file (RUN_DIR/checkpoints/step-N.h5).", valueName: "file.h5"))
    var checkpoint: String
    @Option(help: ArgumentHelp("Text to route (encoded with the checkpoint's tokenizer).", valueName: "text"))
    var text: String?
    @Option(help: ArgumentHelp("Token file to take the tokens from instead.", valueName: "file.tok"))
    var data: String?
    @Option(help: ArgumentHelp("First token of --data.", valueName: "i"))
    var offset = 0
    @Option(help: ArgumentHelp("Tokens of --data (default and maximum: model.seq_len).", valueName: "n"))
    var count: Int?
    @Option(help: ArgumentHelp("tokenizer.json to use instead of the checkpoint's data.tokenizer.", valueName: "file"))
    var tokenizer: String?
    @Flag(help: "Print one JSON object with every array.")
    var json = false
    @Option(help: ArgumentHelp("Also write the arrays to this HDF5 file.", valueName: "file.h5"))
    var h5: String?

    func validate() throws {
        if (text == nil) == (data == nil) { throw ValidationError("give exactly one of --text and --data") }
        if offset < 0 { throw ValidationError("--offset must be >= 0, got \(offset)") }
        if let n = count, n < 1 { throw ValidationError("--count must be at least 1, got \(n)") }
        if text != nil && count != nil { throw ValidationError("--count goes with --data, not --text") }
    }

    func run() throws {
        try failingCleanly {
            let state = try CheckpointEvaluation.readState(checkpoint)
            let c = state.config, T = c.model.seqLen
            guard !c.moe.isDense else { throw UserError("checkpoint \(checkpoint) is a dense model (moe.num_experts = 0): nothing is routed") }
            // The tokenizer is needed for --text, and for the pieces' text when it can be had.
            let tok: BPETokenizer?
            if text != nil || tokenizer != nil {
                tok = try CheckpointInference.tokenizer(for: state, checkpoint: checkpoint, explicit: tokenizer).0
            } else {
                tok = try? CheckpointInference.tokenizer(for: state, checkpoint: checkpoint, explicit: nil).0
            }
            var ids: [Int32]
            if let t = text {
                ids = tok!.encode(t)
                guard !ids.isEmpty else { throw UserError("--text encodes to no tokens") }
                guard ids.count <= T else { throw UserError("--text has \(ids.count) tokens, more than model.seq_len \(T)") }
            } else {
                let file = try CheckpointEvaluation.openTokens(data!, state: state, checkpoint: checkpoint)
                let n = count ?? min(T, file.count - offset)
                guard n <= T else { throw UserError("--count \(n) is more than model.seq_len \(T)") }
                guard offset + n <= file.count, n >= 1 else {
                    throw UserError("--offset \(offset) --count \(n) goes past the end of \(data!) (\(file.count) tokens)")
                }
                ids = (offset ..< offset + n).map { file[$0] }
            }
            Launch.configureBLASThreads()
            let (model, _) = try CheckpointInference.load(checkpoint)
            let trace = RoutingTrace()
            _ = model.run(ids, logitRows: 0, trace: trace, capacityFactor: c.moe.capacityFactor)
            let pieces = ids.map { id in tok.map { String(decoding: $0.decode([id]), as: UTF8.self) } ?? "#\(id)" }
            let agreement = c.moe.experts == .shared ? trace.agreement() : []
            if let path = h5 { try writeH5(path, trace, ids: ids, pieces: pieces, agreement: agreement, E: c.moe.numExperts) }
            if json {
                print(jsonText(jsonObject(trace, ids: ids, pieces: pieces, agreement: agreement, E: c.moe.numExperts)))
            } else {
                printTable(trace, ids: ids, pieces: pieces, agreement: agreement, E: c.moe.numExperts)
            }
        }
    }

    private func nested<T>(_ a: [T], _ R: Int, _ n: Int, _ k: Int) -> [[[T]]] {
        (0 ..< R).map { r in (0 ..< n).map { t in Array(a[(r * n + t) * k ..< (r * n + t + 1) * k]) } }
    }

    private func jsonObject(_ tr: RoutingTrace, ids: [Int32], pieces: [String], agreement: [Double], E: Int) -> [String: Any] {
        let R = tr.iterations, n = tr.tokens, k = tr.k
        return ["checkpoint": checkpoint, "num_experts": E, "iterations": R, "top_k": k, "tokens": ids.map(Int.init), "pieces": pieces,
                "experts": nested(tr.experts.map(Int.init), R, n, k), "gates": nested(tr.gates.map(Double.init), R, n, k),
                "dropped": nested(tr.dropped.map { $0 != 0 }, R, n, k),
                "entropy": (0 ..< R).map { r in (0 ..< n).map { Double(tr.entropy[r * n + $0]) } }, "agreement": agreement]
    }

    private func printTable(_ tr: RoutingTrace, ids: [Int32], pieces: [String], agreement: [Double], E: Int) {
        let R = tr.iterations, n = tr.tokens, k = tr.k
        print("\(n) tokens, \(R) iterations, top-\(k) of \(E) experts; each cell: expert:gate ... H=router entropy (nats, uniform \(String(format: "%.2f", log(Double(E))))), * = dropped")
        var header = "  pos  token          "
        for r in 0 ..< R { header += " | iteration \(r)".padding(toLength: 3 + 7 * k + 7, withPad: " ", startingAt: 0) }
        print(header)
        for t in 0 ..< n {
            var piece = String(reflecting: pieces[t]).replacingOccurrences(of: "\\n", with: "⏎")
            if piece.count > 14 { piece = String(piece.prefix(13)) + "…" }
            var line = String(format: "%5d  ", t) + piece.padding(toLength: 15, withPad: " ", startingAt: 0)
            for r in 0 ..< R {
                line += " |"
                for j in 0 ..< k {
                    let i = (r * n + t) * k + j
                    line += String(format: " %2d:%.2f", tr.experts[i], tr.gates[i]) + (tr.dropped[i] != 0 ? "*" : "")
                }
                line += String(format: " H=%.2f", tr.entropy[r * n + t])
            }
            print(line)
        }
        if !agreement.isEmpty {
            print("agreement of iterations r and r+1 (mean |K_r ∩ K_r+1| / k): "
                  + agreement.enumerated().map { String(format: "%d-%d %.3f", $0.offset, $0.offset + 1, $0.element) }.joined(separator: ", "))
        }
        let drops = tr.dropped.reduce(0) { $0 + Int($1) }
        print("dropped assignments: \(drops) of \(R * n * k)")
    }

    private func writeH5(_ path: String, _ tr: RoutingTrace, ids: [Int32], pieces: [String], agreement: [Double], E: Int) throws {
        let R = tr.iterations, n = tr.tokens, k = tr.k
        let parent = URL(fileURLWithPath: path).deletingLastPathComponent().path
        do { try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true) } catch {
            throw UserError("--h5 \(path): cannot create \(parent): \(error.localizedDescription)", status: ExitStatus.failure)
        }
        try AtomicFile.write(to: path) { f in
            try f.setAttribute("format", "moe-dist/route")
            try f.setAttribute("version", Int64(1))
            try f.setAttribute("checkpoint", checkpoint)
            try f.setAttribute("num_experts", Int64(E))
            try f.setAttribute("pieces", jsonText(pieces))
            try f.createDataset("tokens", values: ids, shape: [n])
            try f.createDataset("experts", values: tr.experts, shape: [R, n, k])
            try f.createDataset("gates", values: tr.gates, shape: [R, n, k])
            try f.createDataset("dropped", values: tr.dropped.map { Int32($0) }, shape: [R, n, k])
            try f.createDataset("entropy", values: tr.entropy, shape: [R, n])
            if !agreement.isEmpty { try f.createDataset("agreement", values: agreement, shape: [R - 1]) }
        }
    }
}

// `moe-dist export`: a checkpoint's weights for PyTorch and Hugging Face users (docs/export-format.md).
//
//   DIR/model.safetensors   every parameter of SPEC section 2 under its path with "/" -> "."
//                           (blocks.0.wq, ffn.0.w1, ffn.0.router.3, ...) and the routers' selection
//                           biases (ffn.0.router_bias, ffn.0.router_bias.3), float32, global shapes
//   DIR/config.json         the architecture and routing keys (the run configuration's model and moe
//                           sections, same names), step, tokens, tokenizer fingerprint
//   DIR/tokenizer.json      the run's tokenizer (when it had one), byte for byte
//   DIR/README.md           how to load them
//
// One rank reads every expert, whatever world size wrote the checkpoint. The checkpoint is verified end to
// end first (Fletcher-32 checksums): a damaged one is refused (DataError, exit status 3).
import Foundation
import Configuration
import DataPipeline
import Model

public enum ModelExport {
    public static let format = "moe-dist/export"

    /// The safetensors name of a SPEC section 2 path (or a /buffers path): "/" becomes ".".
    public static func tensorName(_ path: String) -> String { path.replacingOccurrences(of: "/", with: ".") }

    public struct Summary {
        public var files: [String] = []
        public var tensors = 0
        public var parameters = 0
        public var notes: [String] = []
    }

    public static func export(checkpoint: String, to dir: String, tokenizer explicit: String?) throws -> Summary {
        do { try Checkpoint.verify(checkpoint) } catch let e as CheckpointMissingError { throw e } catch {
            throw DataError("refusing to export a damaged checkpoint: \(error)")
        }
        let state = try CheckpointEvaluation.readState(checkpoint)
        let c = state.config
        var summary = Summary()
        var tokenizerBytes: Data? = nil
        if explicit != nil || c.data.tokenizer != nil {
            let (_, path) = try CheckpointInference.tokenizer(for: state, checkpoint: checkpoint, explicit: explicit)
            tokenizerBytes = FileManager.default.contents(atPath: path)
            guard tokenizerBytes != nil else { throw DataFileError(path, "cannot read the tokenizer") }
        } else {
            summary.notes.append("the run used the generated corpus (no data.tokenizer): no tokenizer.json written")
        }
        do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
            throw TrainingError("\(dir): cannot create the output directory: \(error.localizedDescription)")
        }

        try writeWeights(checkpoint, state, to: dir, &summary)
        try writeConfig(state, to: dir, &summary)
        if let t = tokenizerBytes {
            try writeAtomically(t, dir + "/tokenizer.json")
            summary.files.append(dir + "/tokenizer.json")
        }
        try writeAtomically(Data(readme(c, step: state.counters.step, checkpoint: checkpoint, hasTokenizer: tokenizerBytes != nil).utf8),
                            dir + "/README.md")
        summary.files.append(dir + "/README.md")
        return summary
    }

    /// model.safetensors: parameters in SPEC order, then the selection biases.
    private static func writeWeights(_ checkpoint: String, _ state: CheckpointState, to dir: String,
                                     _ summary: inout Summary) throws {
        let c = state.config
        let params = ModelTensors.list(c)
        let biasPaths = ModelBuffers.routerBiasPaths(c)
        let bias = try Checkpoint.readSelectionBias(checkpoint, config: c)
        let E = c.moe.numExperts
        let entries = params.map { SafetensorsWriter.Entry(name: tensorName($0.path), shape: $0.shape) }
            + biasPaths.map { SafetensorsWriter.Entry(name: tensorName($0), shape: [E]) }
        let fingerprint = TokenizerFingerprint.hex(state.tokenizerFingerprint)
        let modelPath = dir + "/model.safetensors"
        try SafetensorsWriter.write(to: modelPath, entries: entries,
                                    metadata: ["format": "pt", "producer": format, "step": String(state.counters.step),
                                               "tokenizer_fingerprint": fingerprint]) { i in
            if i < params.count {
                let t = try Checkpoint.readParameter(checkpoint, tensor: params[i].path)
                guard t.shape == params[i].shape else {
                    throw DataError("checkpoint \(checkpoint): /params/\(params[i].path) has shape \(t.shape), expected \(params[i].shape)")
                }
                return t.values
            }
            let q = i - params.count
            return Array(bias[q * E ..< (q + 1) * E])
        }
        summary.files.append(modelPath)
        summary.tensors = entries.count
        summary.parameters = params.reduce(0) { $0 + $1.shape.reduce(1, *) }
    }

    /// config.json: the configuration's model and moe sections as they are, plus provenance.
    private static func writeConfig(_ state: CheckpointState, to dir: String, _ summary: inout Summary) throws {
        let c = state.config
        let fingerprint = TokenizerFingerprint.hex(state.tokenizerFingerprint)
        let full = try JSONSerialization.jsonObject(with: Data(c.toJSON().utf8)) as! [String: Any]
        let config: [String: Any] = [
            "format": format, "version": 1, "model": full["model"]!, "moe": full["moe"]!,
            "step": state.counters.step, "tokens": state.counters.tokens, "source_world_size": state.worldSize,
            "tokenizer_fingerprint": fingerprint, "tensor_names": "parameter paths with '/' replaced by '.' (docs/export-format.md)",
        ]
        let configPath = dir + "/config.json"
        try writeAtomically(try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]),
                            configPath)
        summary.files.append(configPath)
    }

    private static func writeAtomically(_ data: Data, _ path: String) throws {
        do { try data.write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw TrainingError("\(path): cannot write: \(error.localizedDescription)")
        }
    }

    private static func readme(_ c: RunConfig, step: Int, checkpoint: String, hasTokenizer: Bool) -> String {
        let m = c.model, f = c.moe
        let arch = f.isDense ? "dense FFN (d_ff \(f.dFF), \(f.activation.rawValue))"
            : "\(f.numExperts) experts (\(f.experts.rawValue) pool), top-\(f.topK), d_ff \(f.dFF), \(f.activation.rawValue), "
              + "\(f.routerScore.rawValue) router \(f.routers.rawValue)"
        return """
        # moe-dist export

        A recurrent Mixture-of-Experts language model exported by `moe-dist export` from
        `\(checkpoint)` (step \(step)): d_model \(m.dModel), \(m.nHeads) heads, \(m.depth) recurrent
        iterations (\(m.trunk.rawValue) trunk), seq_len \(m.seqLen), vocabulary \(m.vocabSize); \(arch).

        - `model.safetensors`: float32 weights; names are the parameter paths with `/` replaced by `.`
          (`embed`, `blocks.0.wq`, `ffn.0.w1` [experts, d_model, d_ff], ...). Weights are stored
          `[in, out]` and applied as `y = x · W`.
        - `config.json`: the architecture (`model`) and routing (`moe`) keys of the run.
        \(hasTokenizer ? "- `tokenizer.json`: the byte-level BPE tokenizer (Hugging Face `tokenizers`).\n" : "- no tokenizer: the run trained on moe-dist's generated corpus (token ids only).\n")
        Load it with the PyTorch module shipped in the moe-dist repository (`python/moe_dist_torch`):

            import torch
            from moe_dist_torch import load_export
            model = load_export("THIS_DIR")              # builds the model from config.json
            logits = model(torch.tensor([[1, 2, 3]]))    # [batch, time, vocab]

        and generate text with `python/examples/generate.py THIS_DIR --prompt "..."`.
        The format is described in the repository's docs/export-format.md.

        """
    }
}

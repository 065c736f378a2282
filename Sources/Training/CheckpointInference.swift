// A checkpoint's model on one rank, whatever world size wrote it: every expert is read (the
// checkpoint stores global tensors), for sampling, routing traces and export.
import Foundation
import Configuration
import DataPipeline
import HDF5
import Model

public enum CheckpointInference {
    /// The model of `path` with its parameters and selection biases loaded, and the checkpoint's state.
    public static func load(_ path: String) throws -> (model: InferenceModel, state: CheckpointState) {
        let state = try CheckpointEvaluation.readState(path)
        let model = InferenceModel(config: state.config)
        try Checkpoint.loadParameters(path, into: model.store)
        model.setSelectionBias(try Checkpoint.readSelectionBias(path, config: state.config))
        return (model, state)
    }

    /// The tokenizer for a checkpoint: `explicit`, else the run's data.tokenizer. Refuses one whose fingerprint
    /// differs from the checkpoint's (SPEC section 8) or whose size differs from model.vocab_size, naming both.
    public static func tokenizer(for state: CheckpointState, checkpoint: String, explicit: String?) throws -> (BPETokenizer, String) {
        guard let path = explicit ?? state.config.data.tokenizer else {
            throw DataError("checkpoint \(checkpoint) records no tokenizer (its run used the generated corpus); pass --tokenizer FILE")
        }
        guard FileManager.default.fileExists(atPath: path) else {
            throw DataFileError(path, "no such tokenizer file" + (explicit == nil ? " (the checkpoint's data.tokenizer; pass --tokenizer FILE)" : ""))
        }
        let tok = try BPETokenizer(contentsOf: path)
        let had = state.tokenizerFingerprint
        if had != 0 && tok.fingerprint != had {
            throw DataError("tokenizer \(path) (fingerprint \(TokenizerFingerprint.hex(tok.fingerprint))) is not the one checkpoint "
                            + "\(checkpoint) was trained with (\(TokenizerFingerprint.hex(had)))")
        }
        guard tok.vocabSize == state.config.model.vocabSize else {
            throw DataError("tokenizer \(path) has \(tok.vocabSize) ids, checkpoint \(checkpoint) has model.vocab_size \(state.config.model.vocabSize)")
        }
        return (tok, path)
    }
}

// Evaluating a checkpoint on a token file (SPEC section 5) at any world size: the
// model is built from the checkpoint's stored configuration (vocabulary included),
// each rank loads the trunk and only its own experts, and the windows are split over
// the ranks by `Evaluator`. Collective: every rank of `world` calls it.
import Foundation
import Collectives
import Configuration
import DataPipeline
import Model
import HDF5

public enum CheckpointEvaluation {
    /// The checkpoint's configuration and step, read under the HDF5 lock (emulated ranks share one library).
    public static func readState(_ path: String) throws -> CheckpointState {
        guard FileManager.default.fileExists(atPath: path) else { throw CheckpointMissingError(path: path) }
        HDF5Library.lock.lock()
        defer { HDF5Library.lock.unlock() }
        do { return try Checkpoint.readState(path) } catch let e as DataError { throw e } catch {
            throw DataError("checkpoint \(path): cannot read it: \(error)")
        }
    }

    /// Opens `dataPath` and checks it against the checkpoint's vocabulary and tokenizer fingerprint
    /// (SPEC section 8: non-zero fingerprints must agree); errors (DataError, DataFileError) name both files.
    public static func openTokens(_ dataPath: String, state: CheckpointState, checkpoint: String) throws -> TokenFile {
        guard FileManager.default.fileExists(atPath: dataPath) else { throw DataFileError(dataPath, "no such token file") }
        let file = try TokenFile(path: dataPath)
        let vocabSize = state.config.model.vocabSize
        guard file.vocabSize == vocabSize else {
            throw DataError("\(dataPath): vocabulary size \(file.vocabSize) differs from the checkpoint's model.vocab_size "
                            + "\(vocabSize) (\(checkpoint))")
        }
        let have = file.fingerprint, had = state.tokenizerFingerprint
        if have != 0 && had != 0 && have != had {
            throw DataError("\(dataPath) was encoded with another tokenizer (fingerprint \(TokenizerFingerprint.hex(have))) "
                            + "than checkpoint \(checkpoint) was trained on (\(TokenizerFingerprint.hex(had)))")
        }
        guard file.count >= 2 else { throw DataError("\(dataPath): \(file.count) token(s), need at least 2 to score one") }
        return file
    }

    /// Expert groups for evaluation on `worldSize` ranks: the checkpoint's parallel.expert_parallel when it
    /// still fits, otherwise the largest divisor of the world size that is <= E.
    public static func expertParallel(_ c: RunConfig, worldSize W: Int) -> Int {
        let E = max(c.moe.numExperts, 1)
        if let g = c.parallel.expertParallel, W % g == 0, g <= E { return g }
        return (1 ... W).last { W % $0 == 0 && $0 <= E } ?? 1
    }

    /// Scores the first `maxTokens` tokens (default: all) of `tokens` with the checkpoint's parameters.
    /// The model's memory is checked first (MemoryFit, `ranksInProcess` ranks sharing this process).
    public static func evaluate(checkpoint: String, tokens: TokenSource, maxTokens: Int?, world: Communicator,
                                ranksInProcess: Int = 1, progress: ((Int, Int) -> Void)? = nil) throws -> EvalResult {
        let st = try readState(checkpoint)
        var c = st.config
        c.parallel.expertParallel = expertParallel(c, worldSize: world.size)
        try MemoryFit.check(c, worldSize: world.size, ranksInProcess: ranksInProcess, use: .evaluation,
                            command: "eval of checkpoint \(checkpoint)")
        let ctx = try ParallelContext.make(world: world, config: c)
        let model = try SlowPhase.run("building the model and loading the checkpoint", show: world.rank == 0) { () throws -> RecurrentMoEModel in
            let model = RecurrentMoEModel(config: c, ctx: ctx)
            try Checkpoint.loadParameters(checkpoint, into: model.store)
            try Checkpoint.loadBuffers(checkpoint, into: model)
            return model
        }
        return Evaluator.evaluate(model: model, tokens: tokens, maxTokens: maxTokens, batch: c.train.microBatch,
                                  progress: progress)
    }
}

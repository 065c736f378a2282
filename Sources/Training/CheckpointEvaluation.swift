// Evaluating a checkpoint on a token file (SPEC section 5) at any world size: the
// model is built from the checkpoint's stored configuration (vocabulary included),
// each rank loads the trunk and only its own experts, and the windows are split over
// the ranks by `Evaluator`. Collective: every rank of `world` calls it.
import Foundation
import Collectives
import Configuration
import DataPipeline
import Model

public enum CheckpointEvaluation {
    /// The checkpoint's configuration and step, read under the HDF5 lock (emulated ranks share one library).
    public static func readState(_ path: String) throws -> CheckpointState {
        guard FileManager.default.fileExists(atPath: path) else { throw TrainingError("\(path): no such checkpoint file") }
        Checkpoint.hdf5Lock.lock()
        defer { Checkpoint.hdf5Lock.unlock() }
        return try Checkpoint.readState(path)
    }

    /// Opens `dataPath` and checks it against the checkpoint's vocabulary; errors name the file.
    public static func openTokens(_ dataPath: String, vocabSize: Int, checkpoint: String) throws -> TokenFile {
        guard FileManager.default.fileExists(atPath: dataPath) else { throw TrainingError("\(dataPath): no such token file") }
        let file: TokenFile
        do { file = try TokenFile(path: dataPath) } catch { throw TrainingError("\(dataPath): \(error)") }
        guard file.vocabSize == vocabSize else {
            throw TrainingError("\(dataPath): vocabulary size \(file.vocabSize) differs from the checkpoint's model.vocab_size "
                                + "\(vocabSize) (\(checkpoint))")
        }
        guard file.count >= 2 else { throw TrainingError("\(dataPath): \(file.count) token(s), need at least 2 to score one") }
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
    public static func evaluate(checkpoint: String, tokens: TokenSource, maxTokens: Int?, world: Communicator,
                                progress: ((Int, Int) -> Void)? = nil) throws -> EvalResult {
        let st = try readState(checkpoint)
        var c = st.config
        c.parallel.expertParallel = expertParallel(c, worldSize: world.size)
        let ctx = try ParallelContext.make(world: world, config: c)
        let model = RecurrentMoEModel(config: c, ctx: ctx)
        try Checkpoint.loadParameters(checkpoint, into: model.store)
        return Evaluator.evaluate(model: model, tokens: tokens, maxTokens: maxTokens, batch: c.train.microBatch,
                                  progress: progress)
    }
}

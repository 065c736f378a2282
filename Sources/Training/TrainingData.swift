// Where a run's tokens come from: the token files named by data.train / data.valid,
// or, with no data configured, moe-dist's own generated corpus.
import Foundation
import Configuration
import DataPipeline

public struct TrainingData {
    public let train: TokenSource
    public let valid: TokenSource?
    public let vocabSize: Int
    /// One line for the banner.
    public let summary: String

    /// Generated corpus size: enough for every preset's default budget at a few epochs at most.
    public static let generatedTrainTokens = 1_000_000
    public static let generatedValidTokens = 50_000

    /// Opens the configured token files, or generates the built-in corpus (train and held-out
    /// samples of the same process) when data.train is not set.
    public static func open(_ c: RunConfig) throws -> TrainingData {
        if let path = c.data.train {
            let train = try TokenFile(path: path)
            let valid = try c.data.valid.map { try TokenFile(path: $0) }
            if let v = valid, v.vocabSize != train.vocabSize {
                throw TrainingError("data.valid: vocabulary size \(v.vocabSize) differs from data.train's \(train.vocabSize)")
            }
            return TrainingData(train: train, valid: valid, vocabSize: train.vocabSize,
                                summary: "data: \(path) (\(train.count) tokens, vocab \(train.vocabSize))"
                                    + (c.data.valid.map { ", valid \($0)" } ?? ""))
        }
        let V = c.model.vocabSize > 0 ? c.model.vocabSize : GeneratedCorpus.defaultVocabSize
        // Same chain (vocabulary, seed), two independent samples of it: stream 0 trains, stream 1 validates.
        // The data seed (train.data_seed, default train.seed) keys the corpus, so init-only replicates share it.
        let seed = UInt64(c.train.effectiveDataSeed)
        let train = GeneratedCorpus.make(vocabSize: V, tokens: generatedTrainTokens, seed: seed, stream: 0)
        let valid = GeneratedCorpus.make(vocabSize: V, tokens: generatedValidTokens, seed: seed, stream: 1)
        return TrainingData(train: train, valid: valid, vocabSize: V,
                            summary: "data: generated corpus (\(generatedTrainTokens) train + \(generatedValidTokens) valid tokens, vocab \(V))")
    }
}

/// A failure of the training pipeline that names its cause.
public struct TrainingError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

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
    /// The tokenizer fingerprint of the data (SPEC section 8): the token files' (train, valid and
    /// data.tokenizer agree), or data.tokenizer's when the files predate fingerprints; 0 = unknown
    /// (old files, or the generated corpus).
    public var fingerprint: UInt64 = 0
    /// What `fingerprint` was read from, for messages ("data.train runs/x/train.tok").
    public var fingerprintSource: String = "the generated corpus"
    /// One-line warnings to print once (token files without a fingerprint).
    public var warnings: [String] = []

    /// Generated corpus size: enough for every preset's default budget at a few epochs at most.
    public static let generatedTrainTokens = 1_000_000
    public static let generatedValidTokens = 50_000

    /// Opens the configured token files, or generates the built-in corpus (train and held-out
    /// samples of the same process) when data.train is not set. Token files and data.tokenizer
    /// must come from one tokenizer: non-zero fingerprints that differ are refused, naming both.
    /// `showProgress`: say so on stderr when a phase is slow (rank 0 only).
    public static func open(_ c: RunConfig, showProgress: Bool = false) throws -> TrainingData {
        let tokenizer = try c.data.tokenizer.map { path -> BPETokenizer in
            do { return try BPETokenizer(contentsOf: path) } catch { throw DataError("data.tokenizer: \(error)") }
        }
        if let path = c.data.train {
            // Labels name the key, not the path: an error about the file names it once.
            let train = try SlowPhase.run("checking the token ids of data.train", show: showProgress) { try TokenFile(path: path) }
            let valid = try c.data.valid.map { v in
                try SlowPhase.run("checking the token ids of data.valid", show: showProgress) { try TokenFile(path: v) }
            }
            if let v = valid, v.vocabSize != train.vocabSize {
                throw DataError("data.valid: \(v.path): vocabulary size \(v.vocabSize) differs from data.train's \(train.vocabSize) (\(path))")
            }
            var data = TrainingData(train: train, valid: valid, vocabSize: train.vocabSize,
                                    summary: "data: \(path) (\(train.count) tokens, vocab \(train.vocabSize))"
                                        + (c.data.valid.map { ", valid \($0)" } ?? ""))
            var known: [(String, UInt64)] = []
            for (key, file) in [("data.train", train)] + (valid.map { [("data.valid", $0)] } ?? []) {
                if file.fingerprint == 0 { data.warnings.append(TokenizerFingerprint.unknownWarning(file.path)) }
                else { known.append(("\(key) \(file.path)", file.fingerprint)) }
            }
            if let t = tokenizer, let tp = c.data.tokenizer {
                if t.vocabSize != train.vocabSize {
                    throw DataError("data.tokenizer: \(tp) has \(t.vocabSize) ids, but data.train \(path) has vocabulary size \(train.vocabSize)")
                }
                known.append(("data.tokenizer \(tp)", t.fingerprint))
            }
            if let (firstName, first) = known.first {
                if let (name, other) = known.dropFirst().first(where: { $0.1 != first }) {
                    throw DataError("\(name) (tokenizer fingerprint \(TokenizerFingerprint.hex(other))) and \(firstName) "
                                    + "(\(TokenizerFingerprint.hex(first))) come from different tokenizers; encode both with one tokenizer.json")
                }
                data.fingerprint = first
                data.fingerprintSource = firstName
            }
            return data
        }
        let V = c.model.vocabSize > 0 ? c.model.vocabSize : GeneratedCorpus.defaultVocabSize
        // Same chain (vocabulary, seed), two independent samples of it: stream 0 trains, stream 1 validates.
        // The data seed (train.data_seed, default train.seed) keys the corpus, so init-only replicates share it.
        let seed = UInt64(c.train.effectiveDataSeed)
        let (train, valid) = SlowPhase.run("generating the built-in corpus (vocabulary \(V))", show: showProgress) {
            (GeneratedCorpus.make(vocabSize: V, tokens: generatedTrainTokens, seed: seed, stream: 0),
             GeneratedCorpus.make(vocabSize: V, tokens: generatedValidTokens, seed: seed, stream: 1))
        }
        return TrainingData(train: train, valid: valid, vocabSize: V,
                            summary: "data: generated corpus (\(generatedTrainTokens) train + \(generatedValidTokens) valid tokens, vocab \(V))")
    }
}

/// Input data that is damaged or does not belong together: token files, tokenizers, checkpoints and
/// histories (exit status 3, "bad data", in docs/exit-status.md). The message names the files.
public struct DataError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A failure of the training pipeline that names its cause.
public struct TrainingError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

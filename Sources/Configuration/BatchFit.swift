// The one rule by which `train`, `bench`, `eval` and `estimate` fit the configured micro-batch to a
// world size. `train.global_batch` is what the optimizer sees and never changes; `train.micro_batch`
// is the most sequences a rank processes at once (a memory bound). When micro_batch × W does not
// divide global_batch, the run uses the largest b <= micro_batch with global_batch % (b × W) == 0.
// That b exists exactly when W divides global_batch (b = 1 always works then); otherwise the error
// names the override that fixes it.

/// What `fitMicroBatch` decided.
public struct BatchFit: Equatable, Sendable {
    /// The micro-batch the run uses (<= the configured one).
    public let microBatch: Int
    /// The configured micro-batch.
    public let requested: Int
    /// Optimizer micro-steps per step: global_batch / (microBatch × W).
    public let microSteps: Int
    /// One line for the start of the run when the micro-batch changed, else nil.
    public let note: String?
}

extension RunConfig {
    /// The micro-batch a run on `worldSize` ranks uses, by the rule above. Throws a ConfigError naming
    /// `train.global_batch` and the override that fixes it when no micro-batch fits.
    public func batchFit(worldSize W: Int) throws -> BatchFit {
        let G = train.globalBatch, b = train.microBatch
        guard G >= 1, b >= 1, W >= 1 else {
            // validate() reports the bad value itself.
            return BatchFit(microBatch: b, requested: b, microSteps: 1, note: nil)
        }
        if G % (b * W) == 0 {
            return BatchFit(microBatch: b, requested: b, microSteps: G / (b * W), note: nil)
        }
        guard G % W == 0 else {
            let up = (G + W - 1) / W * W
            let divisors = (1 ... min(G, 64)).filter { G % $0 == 0 }.map(String.init).joined(separator: ", ")
            throw ConfigError(key: "train.global_batch", "\(G) sequences cannot be split over \(W) ranks: "
                              + "add the override train.global_batch=\(up) (a multiple of \(W)), "
                              + "or run on a world size that divides \(G) (\(divisors))")
        }
        let perRank = G / W
        let fitted = (1 ... min(b, perRank)).last { perRank % $0 == 0 }!
        let steps = perRank / fitted
        let note = "train.micro_batch: \(b) × \(W) rank(s) does not divide train.global_batch \(G); "
            + "using train.micro_batch=\(fitted) (\(steps) micro-step(s) of \(fitted) sequences per rank)"
        return BatchFit(microBatch: fitted, requested: b, microSteps: steps, note: note)
    }

    /// Applies `batchFit(worldSize:)`: sets `train.micro_batch` to the fitted value (so that the
    /// resolved configuration, config.yaml, checkpoints and metrics record it) and returns the note.
    @discardableResult
    public mutating func fitMicroBatch(worldSize: Int) throws -> String? {
        let fit = try batchFit(worldSize: worldSize)
        train.microBatch = fit.microBatch
        return fit.note
    }
}

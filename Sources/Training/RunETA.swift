// The training ETA: remaining steps at the measured training time per step, plus the evaluations
// and checkpoints still to come at their measured mean durations. Before the first evaluation its
// duration is estimated from the training speed: an evaluation runs the forward pass only (about a
// third of a training step's work) over train.eval_tokens tokens.

public struct RunETA: Sendable {
    public let totalSteps: Int, evalInterval: Int, checkpointInterval: Int, evalTokens: Int
    public let evaluates: Bool
    /// Wall-clock seconds spent so far (since this process started training) on each kind of work.
    public private(set) var trainSeconds = 0.0, evalSeconds = 0.0, checkpointSeconds = 0.0
    public private(set) var stepsTimed = 0, evals = 0, checkpoints = 0, tokensTimed = 0

    public init(totalSteps: Int, evalInterval: Int, checkpointInterval: Int, evalTokens: Int, evaluates: Bool) {
        self.totalSteps = totalSteps; self.evalInterval = evalInterval; self.checkpointInterval = checkpointInterval
        self.evalTokens = evalTokens; self.evaluates = evaluates
    }

    public mutating func addSteps(_ n: Int, tokens: Int, seconds: Double) { stepsTimed += n; tokensTimed += tokens; trainSeconds += seconds }
    public mutating func addEval(seconds: Double) { evals += 1; evalSeconds += seconds }
    public mutating func addCheckpoint(seconds: Double) { checkpoints += 1; checkpointSeconds += seconds }

    /// Steps in (step, totalSteps] at which something every `interval` steps happens, plus the last step.
    public static func remaining(after step: Int, total: Int, every interval: Int) -> Int {
        guard step < total, interval > 0 else { return 0 }
        return total / interval - step / interval + (total % interval == 0 ? 0 : 1)
    }

    /// Seconds to the end of the run after `step`; nil before any step was timed.
    public func seconds(after step: Int) -> Double? {
        guard stepsTimed > 0 else { return nil }
        let perStep = trainSeconds / Double(stepsTimed)
        var t = perStep * Double(max(totalSteps - step, 0))
        if evaluates {
            let perEval = evals > 0 ? evalSeconds / Double(evals)
                : Double(evalTokens) / 3 * (trainSeconds / Double(max(tokensTimed, 1)))
            t += perEval * Double(Self.remaining(after: step, total: totalSteps, every: evalInterval))
        }
        if checkpoints > 0 {
            t += checkpointSeconds / Double(checkpoints) * Double(Self.remaining(after: step, total: totalSteps, every: checkpointInterval))
        }
        return t
    }
}

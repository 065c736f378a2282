// One optimizer step of the data- and expert-parallel trainer:
//
//   for each micro-step m: forward + backward on this rank's share of global micro-batch m
//   all-reduce trunk gradients over the world (one flat buffer)
//   all-reduce expert gradients over the replica group (copies of the same experts)
//   global gradient norm (each trunk tensor once, each expert once), skip if non-finite
//   clip, learning rate from the schedule, AdamW
//
// Every rank runs the same sequence of collectives; with one rank they are no-ops.
import Foundation
import Configuration
import Collectives
import DataPipeline
import Model

/// What one optimizer step did, identical on every rank.
public struct StepReport: Sendable {
    /// Optimizer steps taken so far (this one included).
    public var step = 0
    /// Training tokens consumed so far.
    public var tokens = 0
    /// Training tokens of this step (all ranks).
    public var stepTokens = 0
    public var loss = 0.0, ce = 0.0, aux = 0.0, z = 0.0, lr = 0.0, gradNorm = 0.0
    /// The step's loss or gradients were not finite: no update was applied.
    public var skipped = false
    public var stepTime = 0.0
    /// Per iteration r, summed over the step's micro-steps: [R·E] counts before drops, [R] drops,
    /// [R·E] Σ router probabilities, [R] tokens routed.
    public var counts: [Int64] = [], dropped: [Int64] = [], probSum: [Double] = [], routedTokens: [Int64] = []
    /// [R−1] Σ over the step's tokens of |K_r ∩ K_{r+1}| / k (shared pool; zeros otherwise).
    public var agreementSum: [Double] = []
    /// Seconds spent in each phase of the step on this rank (see `Phase`).
    public var timing: [Phase: Double] = [:]
}

/// The resumable counters of a run (saved in checkpoints).
public struct TrainerCounters: Codable, Equatable, Sendable {
    public var step = 0          // optimizer steps taken, skipped ones included
    public var updates = 0       // AdamW updates applied (bias correction)
    public var tokens = 0        // training tokens consumed
    public var nanEvents = 0     // steps skipped for non-finite loss or gradients
    public init() {}
}

public final class Trainer {
    public let config: RunConfig
    public let ctx: ParallelContext
    public let model: RecurrentMoEModel
    public let loader: BatchLoader
    public var counters = TrainerCounters()
    public let totalSteps: Int
    public let microSteps: Int
    private let schedule: LearningRateSchedule
    private let adamw: AdamW
    // Reused every step: this rank's token windows [M, b, T+1], one micro-batch's inputs and targets [b·T],
    // the global scalars [Σ CE, expert grad²], and the report.
    private let batchTokens = Buffer<Int32>(), inputs = Buffer<Int32>(), targets = Buffer<Int32>()
    private var scalars = [0.0, 0.0]
    private var report = StepReport()

    /// `train`: the training tokens (the whole split on every rank; each rank reads only its windows).
    public init(config: RunConfig, ctx: ParallelContext, train: TokenSource) throws {
        self.config = config
        self.ctx = ctx
        let t = config.train
        microSteps = t.globalBatch / (t.microBatch * ctx.world.size)
        totalSteps = Trainer.stepBudget(config)
        model = RecurrentMoEModel(config: config, ctx: ctx)
        loader = try BatchLoader(source: train, seqLen: config.model.seqLen, globalBatch: t.globalBatch,
                                 microBatch: t.microBatch, rank: ctx.world.rank, worldSize: ctx.world.size,
                                 seed: UInt64(t.effectiveDataSeed))
        schedule = LearningRateSchedule(t, totalSteps: totalSteps)
        adamw = AdamW(t)
    }

    /// Optimizer steps of the run: `train.max_steps`, or the steps that `train.max_tokens` allows, whichever is fewer.
    public static func stepBudget(_ c: RunConfig) -> Int {
        let perStep = c.train.globalBatch * c.model.seqLen
        var steps = Int.max
        if let s = c.train.maxSteps { steps = s }
        if let tk = c.train.maxTokens { steps = min(steps, (tk + perStep - 1) / perStep) }
        return steps == Int.max ? 0 : steps
    }

    public var isFinished: Bool { counters.step >= totalSteps }

    /// Runs one optimizer step (all ranks together). After the first step only the data loader's window
    /// bookkeeping allocates (and the report's arrays, when the caller still holds the previous report).
    public func trainStep() -> StepReport {
        let c = config, T = c.model.seqLen, R = c.model.depth, E = c.moe.numExperts, M = microSteps
        let store = model.store
        let start = PhaseTimer.now()
        let timer = ctx.timer
        timer.reset()
        let scales = LossScales(ce: 1 / Double(c.train.globalBatch * T),
                                aux: c.moe.auxLossCoef / Double(M * R), z: c.moe.zLossCoef / Double(M * R))
        resetReport(R: R, E: E)
        store.zeroGrads(workers: ctx.blasWorkers)
        let ceLocal = runMicroSteps(scales: scales)
        timer.collective(.allReduce, over: ctx.world) { reduceGradients() }
        // The local expert-gradient norm is clipping work (optimizer); only its sum travels.
        var clock = PhaseTimer.now()
        let firstCopy = ctx.world.rank < ctx.expertGroup.size
        let expertSq = firstCopy ? store.gradSquaredNorm(store.trunkCount ..< store.count, workers: ctx.blasWorkers) : 0
        timer.add(.optimizer, since: clock)
        timer.collective(.allReduce, over: ctx.world) { reduceScalars(ceLocal: ceLocal, expertSquaredNorm: expertSq) }
        clock = PhaseTimer.now()

        let trunkSq = store.gradSquaredNorm(0 ..< store.trunkCount, workers: ctx.blasWorkers)
        report.gradNorm = (trunkSq + scalars[1]).squareRoot()
        report.ce = scalars[0] / Double(c.train.globalBatch * T)
        report.aux = M > 0 && R > 0 && E > 0 ? report.aux / Double(M * R) : 0
        report.z = M > 0 && R > 0 && E > 0 ? report.z / Double(M * R) : 0
        report.loss = report.ce + c.moe.auxLossCoef * report.aux + c.moe.zLossCoef * report.z
        report.lr = schedule(counters.step)

        if report.loss.isFinite && report.gradNorm.isFinite {
            let scale = GradientClipping.scale(gradNorm: report.gradNorm, maxNorm: c.train.gradClip)
            counters.updates += 1
            adamw.update(store, lr: report.lr, t: counters.updates, gradScale: scale, workers: ctx.blasWorkers)
            report.counts.withUnsafeBufferPointer { model.updateSelectionBias(iterationCounts: $0.baseAddress!) }
        } else {
            report.skipped = true
            counters.nanEvents += 1
        }
        timer.add(.optimizer, since: clock)
        counters.step += 1
        counters.tokens += c.train.globalBatch * T
        report.step = counters.step
        report.tokens = counters.tokens
        report.stepTokens = c.train.globalBatch * T
        report.stepTime = PhaseTimer.now() - start
        for i in 0 ..< Trainer.phases.count { report.timing[Trainer.phases[i]] = timer.charged(Trainer.phases[i]) }
        return report
    }

    private static let phases = Phase.allCases

    /// Zeroes the reused report in place (its arrays are reallocated only if the caller still holds them).
    private func resetReport(R: Int, E: Int) {
        if report.counts.count != R * E || report.dropped.count != R {   // dense: R·E = 0, but R rows of drops
            report.counts = [Int64](repeating: 0, count: R * E)
            report.dropped = [Int64](repeating: 0, count: R)
            report.probSum = [Double](repeating: 0, count: R * E)
            report.routedTokens = [Int64](repeating: 0, count: R)
            report.agreementSum = [Double](repeating: 0, count: max(R - 1, 0))
        }
        for i in report.agreementSum.indices { report.agreementSum[i] = 0 }
        for i in 0 ..< R * E { report.counts[i] = 0; report.probSum[i] = 0 }
        for i in 0 ..< R { report.dropped[i] = 0; report.routedTokens[i] = 0 }
        report.aux = 0; report.z = 0; report.skipped = false
    }

    /// Forward and backward of every micro-step of this rank's share; sums the routing statistics into the
    /// report (aux and z as sums over micro-steps and iterations). Returns Σ CE of this rank's targets.
    private func runMicroSteps(scales: LossScales) -> Double {
        let T = config.model.seqLen, b = config.train.microBatch, E = config.moe.numExperts, row = T + 1
        let windows = batchTokens.ensure(microSteps * b * row)
        loader.nextStep(into: windows)
        let x = inputs.ensure(b * T), y = targets.ensure(b * T)
        var ceLocal = 0.0
        for m in 0 ..< microSteps {
            for s in 0 ..< b {
                let w = windows + (m * b + s) * row
                (x + s * T).update(from: w, count: T)
                (y + s * T).update(from: w + 1, count: T)
            }
            let r = model.step(inputs: x, targets: y, B: b, T: T, scales: scales, applyCapacity: true, backward: true)
            ceLocal += r.ceSum
            for it in 0 ..< r.routing.count {
                let st = r.routing[it]
                report.aux += st.aux; report.z += st.z
                report.dropped[it] += st.dropped
                report.routedTokens[it] += Int64(st.tokens)
                if it > 0, let a = st.agreementSum { report.agreementSum[it - 1] += a }
                for e in 0 ..< E {
                    report.counts[it * E + e] += st.counts[e]
                    report.probSum[it * E + e] += st.probSum[e]
                }
            }
        }
        return ceLocal
    }

    /// Gradient reductions: trunk over the world, experts over their replicas (communicates).
    private func reduceGradients() {
        let store = model.store
        ctx.world.allReduceSum(UnsafeMutableBufferPointer(start: store.grads, count: store.trunkCount))
        if ctx.replicaGroup.size > 1 {
            ctx.replicaGroup.allReduceSum(UnsafeMutableBufferPointer(start: store.grads + store.trunkCount,
                                                                    count: store.count - store.trunkCount))
        }
    }

    /// The global scalars [Σ CE, expert grad² of the first copies] into `scalars` (communicates).
    private func reduceScalars(ceLocal: Double, expertSquaredNorm: Double) {
        scalars[0] = ceLocal
        scalars[1] = expertSquaredNorm
        scalars.withUnsafeMutableBufferPointer { ctx.world.allReduceSum($0) }
    }
}

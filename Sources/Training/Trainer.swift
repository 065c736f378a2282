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
    private var inputs: [Int32] = [], targets: [Int32] = []

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
                                 seed: UInt64(t.seed))
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

    /// Runs one optimizer step (all ranks together).
    public func trainStep() -> StepReport {
        let c = config, T = c.model.seqLen, b = c.train.microBatch
        let R = c.model.depth, E = c.moe.numExperts
        let M = microSteps
        let store = model.store
        let world = ctx.world
        let start = Date()
        let timer = ctx.timer
        timer.reset()

        let scales = LossScales(ce: 1 / Double(c.train.globalBatch * T),
                                aux: c.moe.auxLossCoef / Double(M * R), z: c.moe.zLossCoef / Double(M * R))
        var report = StepReport()
        report.counts = [Int64](repeating: 0, count: R * E)
        report.dropped = [Int64](repeating: 0, count: R)
        report.probSum = [Double](repeating: 0, count: R * E)
        report.routedTokens = [Int64](repeating: 0, count: R)

        store.zeroGrads()
        let batches = loader.nextStep()
        var ceLocal = 0.0, auxSum = 0.0, zSum = 0.0
        inputs = [Int32](repeating: 0, count: b * T); targets = inputs
        for m in 0 ..< M {
            let w = batches[m]
            for s in 0 ..< b {
                for t in 0 ..< T {
                    inputs[s * T + t] = w[s * (T + 1) + t]
                    targets[s * T + t] = w[s * (T + 1) + t + 1]
                }
            }
            let r = inputs.withUnsafeBufferPointer { x in
                targets.withUnsafeBufferPointer { y in
                    model.step(inputs: x.baseAddress!, targets: y.baseAddress!, B: b, T: T, scales: scales,
                               applyCapacity: true, backward: true)
                }
            }
            ceLocal += r.ceSum
            for (it, st) in r.routing.enumerated() {
                auxSum += st.aux; zSum += st.z
                report.dropped[it] += st.dropped
                report.routedTokens[it] += Int64(st.tokens)
                for e in 0 ..< E {
                    report.counts[it * E + e] += st.counts[e]
                    report.probSum[it * E + e] += st.probSum[e]
                }
            }
        }
        var clock = PhaseTimer.now()
        // Gradient reductions: trunk over the world, experts over their replicas.
        world.allReduceSum(UnsafeMutableBufferPointer(start: store.grads, count: store.trunkCount))
        if ctx.replicaGroup.size > 1 {
            ctx.replicaGroup.allReduceSum(UnsafeMutableBufferPointer(start: store.grads + store.trunkCount,
                                                                    count: store.count - store.trunkCount))
        }
        // Global scalars: [Σ CE, expert grad² of the first copy]
        let firstCopy = world.rank < ctx.expertGroup.size
        var scalars = [ceLocal, firstCopy ? store.gradSquaredNorm(store.trunkCount ..< store.count) : 0]
        scalars.withUnsafeMutableBufferPointer { world.allReduceSum($0) }
        clock = timer.add(.allReduce, since: clock)

        let trunkSq = store.gradSquaredNorm(0 ..< store.trunkCount)
        report.gradNorm = (trunkSq + scalars[1]).squareRoot()
        report.ce = scalars[0] / Double(c.train.globalBatch * T)
        report.aux = M > 0 && R > 0 && E > 0 ? auxSum / Double(M * R) : 0
        report.z = M > 0 && R > 0 && E > 0 ? zSum / Double(M * R) : 0
        report.loss = report.ce + c.moe.auxLossCoef * report.aux + c.moe.zLossCoef * report.z
        report.lr = schedule(counters.step)

        if report.loss.isFinite && report.gradNorm.isFinite {
            let clip = c.train.gradClip
            let scale: Float = clip > 0 && report.gradNorm > clip ? Float(clip / (report.gradNorm + 1e-6)) : 1
            counters.updates += 1
            adamw.update(store, lr: report.lr, t: counters.updates, gradScale: scale)
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
        report.stepTime = Date().timeIntervalSince(start)
        report.timing = timer.totals()
        return report
    }
}

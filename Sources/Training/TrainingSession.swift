// A training run: the loop around Trainer.trainStep with evaluation, progress
// lines, the human log and the metrics history. Only rank 0 prints and writes.
import Foundation
import Configuration
import DataPipeline
import Model

public final class TrainingSession {
    public let config: RunConfig
    public let trainer: Trainer
    public let data: TrainingData
    public let runDirectory: String?
    private let say: (String) -> Void
    private var metrics: MetricsHistory?
    private var logHandle: FileHandle?
    private var isRoot: Bool { trainer.ctx.world.rank == 0 }
    /// Called with the number of the step about to run (a hook for fault-injection tests).
    public var beforeStep: ((Int) throws -> Void)?
    /// Lines logged after the banner's first line (e.g. how the micro-batch was fitted to the world).
    public var startNotes: [String] = []
    /// Checkpoint to continue from, loaded at the start of `run`.
    private var resumeFrom: String?
    // Stage gate (gate.*): the history the stop rule reads (rank 0; earlier rows from metrics.h5 on
    // resume), and the decision that stopped the run, if one did.
    private var gateHistory = GateHistory()
    public private(set) var gateStop: StopDecision?

    /// `say` receives progress lines on rank 0 (the CLI prints them).
    public init(config: RunConfig, ctx: ParallelContext, data: TrainingData, runDirectory: String?,
                say: @escaping (String) -> Void) throws {
        self.config = config
        self.data = data
        self.runDirectory = runDirectory
        self.say = say
        trainer = try Trainer(config: config, ctx: ctx, train: data.train)
    }

    /// Continue from `checkpoint` (parameters, moments, counters, data position) when `run` starts.
    public func resume(from checkpoint: String) { resumeFrom = checkpoint }

    /// The newest intact checkpoint of `runDirectory`, skipping damaged ones (each reported through `warn`).
    public static func newestIntactCheckpoint(runDirectory: String, warn: (String) -> Void) -> String? {
        for path in Checkpoint.list(runDirectory: runDirectory) {
            do { try Checkpoint.verify(path); return path } catch { warn("skipping damaged checkpoint \(path): \(error)") }
        }
        return nil
    }

    /// Prints a line on rank 0 and appends it to RUN_DIR/train.log.
    public func log(_ line: String) {
        guard isRoot else { return }
        say(line)
        logHandle?.write((line + "\n").data(using: .utf8)!)
    }

    private func openRunDirectory() throws {
        guard isRoot, let dir = runDirectory else { return }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try config.toYAML().write(toFile: dir + "/config.yaml", atomically: true, encoding: .utf8)
        let logPath = dir + "/train.log"
        if !FileManager.default.fileExists(atPath: logPath) { _ = FileManager.default.createFile(atPath: logPath, contents: nil) }
        logHandle = FileHandle(forWritingAtPath: logPath)
        logHandle?.seekToEndOfFile()
        let path = dir + "/metrics.h5", snapshot = dir + "/.metrics.h5.at-checkpoint"
        func openHistory() throws {
            // Stage gate: a resumed run continues, so it drops an earlier stop marker; the stop rule
            // sees the history up to the checkpoint's step.
            if FileManager.default.fileExists(atPath: path) {
                try RunRecord.clearStopped(metricsPath: path)
                gateHistory = try RunMetrics.read(path).gateHistory.upTo(step: trainer.counters.step)
            }
            metrics = try MetricsHistory(path: path, configJSON: config.toJSON(), iterations: config.model.depth,
                                         numExperts: config.moe.numExperts)
        }
        do {
            try openHistory()
        } catch where FileManager.default.fileExists(atPath: snapshot) && trainer.counters.step > 0 {
            // A kill during a flush can leave the history unreadable: fall back to the copy taken at the last checkpoint.
            log("warning: \(path) is unreadable (\(error)); restoring the copy taken at the last checkpoint")
            try? FileManager.default.removeItem(atPath: path)
            try FileManager.default.copyItem(atPath: snapshot, toPath: path)
            try openHistory()
        }
        try metrics?.truncate(afterStep: Int64(trainer.counters.step))
    }

    /// The start-up banner: configuration, sizes and layout.
    public func banner() -> [String] {
        let c = config, cost = ModelCost(c), ctx = trainer.ctx
        var lines = ["moe-dist: \(c.name)"] + startNotes + [data.summary]
        lines.append("world: \(ctx.world.size) rank(s), expert groups of \(ctx.expertGroup.size), "
                     + "\(trainer.microSteps) micro-step(s) of \(c.train.microBatch) sequences per rank")
        lines.append(String(format: "parameters: %@ total, %@ in experts, %@ active per token; model FLOPs/token %@",
                            human(cost.totalParameters), human(cost.expertParameters), human(cost.activeParameters),
                            human(Int(cost.flopsPerToken))))
        lines.append("budget: \(trainer.totalSteps) steps of \(c.train.globalBatch * c.model.seqLen) tokens")
        return lines
    }

    /// Trains to the step budget. Returns the reports of every step taken.
    @discardableResult
    public func run() throws -> [StepReport] {
        if let path = resumeFrom {
            try Checkpoint.load(path, into: trainer)
        }
        // Every rank has finished reading before rank 0 opens the history (emulated ranks share one HDF5 library).
        trainer.ctx.world.barrier()
        try openRunDirectory()
        if let path = resumeFrom { log("resumed from \(path) at step \(trainer.counters.step)") }
        defer { metrics?.close(); try? logHandle?.close() }
        for line in banner() { log(line) }
        let c = config
        let R = c.model.depth, E = c.moe.numExperts
        var reports: [StepReport] = []
        var interval = IntervalStats(R: R, E: E)
        var eta = RunETA(totalSteps: trainer.totalSteps, evalInterval: c.train.evalInterval,
                         checkpointInterval: c.train.checkpointInterval, evalTokens: c.train.evalTokens,
                         evaluates: data.valid != nil)
        Preemption.install()
        while !trainer.isFinished {
            try beforeStep?(trainer.counters.step + 1)
            let stepStarted = Date()
            let tokensBefore = trainer.counters.tokens
            let rep = trainer.trainStep()
            eta.addSteps(1, tokens: trainer.counters.tokens - tokensBefore, seconds: Date().timeIntervalSince(stepStarted))
            reports.append(rep)
            interval.add(rep)
            if rep.skipped { log("step \(rep.step): non-finite loss or gradient (loss \(rep.loss), grad norm \(rep.gradNorm)); update skipped") }
            let preempted = anyRankPreempted()
            let last = trainer.isFinished || preempted
            if rep.step % c.train.logInterval == 0 || last {
                let tps = Double(interval.tokens) / max(interval.time, 1e-9)
                log(String(format: "step %d/%d | loss %.4f | ce %.4f | aux %.4f | lr %.2e | grad norm %.3f | %.0f tok/s | epoch %.3f | ETA %@",
                           rep.step, trainer.totalSteps, rep.loss, rep.ce, rep.aux, rep.lr, rep.gradNorm, tps,
                           trainer.loader.epochFraction, duration(eta.seconds(after: rep.step) ?? 0)))
                if isRoot {
                    try metrics?.append(TrainRow(step: Int64(rep.step), tokens: Int64(rep.tokens), epoch: trainer.loader.epochFraction,
                                                 loss: rep.loss, ce: rep.ce, aux: rep.aux, z: rep.z, lr: rep.lr,
                                                 gradNorm: rep.gradNorm, tokensPerSec: tps,
                                                 stepTime: interval.time / Double(max(interval.steps, 1)),
                                                 nanEvents: Int64(trainer.counters.nanEvents)))
                    gateHistory.train.append(TrainPoint(step: rep.step, loss: rep.loss, tokensPerSec: tps))
                    if E > 0 {
                        let row = interval.expertRow(step: Int64(rep.step))
                        try metrics?.append(row)
                        let s = MetricsHistory.loadSummary(counts: row.counts, iterations: R, experts: E)
                        gateHistory.routing.append(RoutingPoint(step: rep.step, entropy: s.entropy.reduce(0, +) / Double(R),
                                                                maxLoad: s.maxLoad.reduce(0, +) / Double(R),
                                                                minLoad: s.minLoad.reduce(0, +) / Double(R)))
                    }
                    try metrics?.flush()
                }
                interval = IntervalStats(R: R, E: E)
            }
            var gateStops = false
            // A preempted run saves first: the signal's grace period may not cover an evaluation.
            if let valid = data.valid, !preempted && (rep.step % c.train.evalInterval == 0 || trainer.isFinished) {
                let evalStarted = Date()
                let ev = Evaluator.evaluate(model: trainer.model, tokens: valid, maxTokens: c.train.evalTokens,
                                            batch: c.train.microBatch)
                eta.addEval(seconds: Date().timeIntervalSince(evalStarted))
                log(String(format: "eval step %d | loss %.4f | ppl %.3f | %d tokens scored", rep.step, ev.loss, ev.ppl, ev.scored))
                if isRoot {
                    try metrics?.append(EvalRow(step: Int64(rep.step), tokens: Int64(rep.tokens), epoch: trainer.loader.epochFraction,
                                                loss: ev.loss, ppl: ev.ppl, scored: Int64(ev.scored)))
                    try metrics?.flush()
                    gateHistory.evals.append(EvalPoint(step: rep.step, tokens: rep.tokens, loss: ev.loss))
                }
                // Stage gate: rank 0 applies the stop rule to its history; every rank follows its answer.
                if c.gate.enabled && !last {
                    let decision = isRoot ? StageGate.stop(gateHistory, c.gate) : nil
                    var flag = [decision?.stop == true ? 1.0 : 0.0]
                    flag.withUnsafeMutableBufferPointer { trainer.ctx.world.allReduceMax($0) }
                    gateStops = flag[0] > 0
                    if gateStops { gateStop = decision ?? StopDecision(stop: true, clauses: []) }
                }
            }
            if rep.step % c.train.checkpointInterval == 0 || last || gateStops {
                let saveStarted = Date()
                try saveCheckpoint()
                eta.addCheckpoint(seconds: Date().timeIntervalSince(saveStarted))
            }
            if gateStops {
                // Stage gate stop: the checkpoint is written; record the reason on metrics.h5 and end with status 0.
                log("stage gate: stopped after step \(rep.step) of \(trainer.totalSteps): \(gateStop?.reason ?? "")")
                metrics?.close()
                if isRoot, let dir = runDirectory {
                    try RunRecord.markStopped(metricsPath: dir + "/metrics.h5", step: rep.step, reason: gateStop?.reason ?? "stop")
                }
                break
            }
            if preempted {
                log("\(Preemption.signalName) received: stopped after step \(rep.step)")
                throw PreemptedError(step: rep.step, checkpoint: runDirectory.map { Checkpoint.path(runDirectory: $0, step: rep.step) })
            }
        }
        return reports
    }

    /// Writes RUN_DIR/checkpoints/step-N.h5 (all ranks) and keeps the newest train.keep_checkpoints.
    public func saveCheckpoint() throws {
        guard let dir = runDirectory else { return }
        let path = Checkpoint.path(runDirectory: dir, step: trainer.counters.step)
        let start = Date()
        try Checkpoint.save(trainer, to: path)
        if isRoot {
            Checkpoint.prune(runDirectory: dir, keep: config.train.keepCheckpoints)
            try snapshotMetrics(dir)
        }
        log(String(format: "checkpoint %@ (%.2f s)", path, Date().timeIntervalSince(start)))
    }

    /// Copies the flushed history next to the checkpoints (temporary name, then rename), so a history
    /// damaged by a kill mid-write can be restored on resume.
    private func snapshotMetrics(_ dir: String) throws {
        guard let metrics else { return }
        try metrics.flush()
        let snapshot = dir + "/.metrics.h5.at-checkpoint", tmp = snapshot + ".tmp"
        try? FileManager.default.removeItem(atPath: tmp)
        try FileManager.default.copyItem(atPath: dir + "/metrics.h5", toPath: tmp)
        guard rename(tmp, snapshot) == 0 else { throw TrainingError("cannot write \(snapshot)") }
    }

    /// A preemption signal may reach only some ranks: they agree, so all stop after the same step.
    private func anyRankPreempted() -> Bool {
        var f = [Preemption.requested ? 1.0 : 0.0]
        f.withUnsafeMutableBufferPointer { trainer.ctx.world.allReduceMax($0) }
        return f[0] > 0
    }
}

/// Per-interval sums for the metrics history's /experts rows and throughput.
struct IntervalStats {
    let R: Int, E: Int
    var steps = 0, tokens = 0, time = 0.0
    var counts: [Int64], dropped: [Int64], probSum: [Double], routed: [Int64]
    init(R: Int, E: Int) {
        self.R = R; self.E = E
        counts = .init(repeating: 0, count: R * E); dropped = .init(repeating: 0, count: R)
        probSum = .init(repeating: 0, count: R * E); routed = .init(repeating: 0, count: R)
    }
    mutating func add(_ r: StepReport) {
        steps += 1; time += r.stepTime
        tokens += r.stepTokens
        for i in 0 ..< counts.count { counts[i] += r.counts[i]; probSum[i] += r.probSum[i] }
        for i in 0 ..< R { dropped[i] += r.dropped[i]; routed[i] += r.routedTokens[i] }
    }
    func expertRow(step: Int64) -> ExpertRow {
        var mean = [Float](repeating: 0, count: R * E)
        for r in 0 ..< R where routed[r] > 0 {
            for e in 0 ..< E { mean[r * E + e] = Float(probSum[r * E + e] / Double(routed[r])) }
        }
        return ExpertRow(step: step, counts: counts, dropped: dropped, probMean: mean)
    }
}

func human(_ n: Int) -> String {
    let x = Double(n)
    if x >= 1e9 { return String(format: "%.2fG", x / 1e9) }
    if x >= 1e6 { return String(format: "%.2fM", x / 1e6) }
    if x >= 1e3 { return String(format: "%.1fk", x / 1e3) }
    return "\(n)"
}

func duration(_ s: Double) -> String {
    let t = Int(s.rounded())
    if t >= 3600 { return "\(t / 3600)h\(String(format: "%02d", t % 3600 / 60))m" }
    if t >= 60 { return "\(t / 60)m\(String(format: "%02d", t % 60))s" }
    return "\(t)s"
}

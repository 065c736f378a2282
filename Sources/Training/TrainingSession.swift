// A training run: the loop around Trainer.trainStep with evaluation, progress
// lines, the human log and the metrics history. Only rank 0 prints and writes.
import Foundation
import Collectives
import Configuration
import DataPipeline
import Model
import Kernels
import HDF5

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
    /// The step of the checkpoint `resume` was given (nil for a fresh start).
    public private(set) var resumeStep: Int?
    /// Keys whose values differ from the checkpoint's configuration (allowed by `resume`), recorded in the history.
    public private(set) var configChanges: [ConfigDifference] = []
    /// What the learning-rate schedule does differently after a changed budget (a line for the log), if anything.
    private var scheduleNote: String?
    /// The tokenizer fingerprint written to checkpoints: the data's, or the resumed checkpoint's when the
    /// data has none (old token files).
    public private(set) var tokenizerFingerprint: UInt64

    /// Keys that may differ on resume without `--allow-config-change`: how the same global batch is laid out
    /// over the ranks, which changes with the world size (the math is the same up to summation order), and
    /// which rank runs an expert (`parallel.balance_experts`, which changes nothing), and how long a collective
    /// may wait for a hung rank (`parallel.collective_timeout`, which changes nothing either).
    public static let layoutKeys: Set<String> = ["parallel.expert_parallel", "parallel.balance_experts",
                                                 "parallel.collective_timeout", "train.micro_batch"]
    /// Keys that may also differ on resume without the flag: how long the run goes on and what it writes on the way
    /// (the budget, the eval, log and checkpoint intervals, the checkpoints kept, the stage gate's thresholds), not
    /// the model or the optimisation path. A new budget moves the cosine's end (SPEC section 1: the cosine reaches
    /// `lr·min_lr_ratio` at the step budget); every change is logged and recorded in `config_changes`.
    public static func isBudgetKey(_ key: String) -> Bool {
        ["train.max_steps", "train.max_tokens", "train.eval_interval", "train.log_interval", "train.checkpoint_interval",
         "train.keep_checkpoints"].contains(key) || (key.hasPrefix("gate.") && key != "gate.enabled")
    }
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
        tokenizerFingerprint = data.fingerprint
    }

    /// Continue from `checkpoint` (parameters, moments, counters, data position) when `run` starts.
    /// Checks now (before anything is printed or written) that the checkpoint can be resumed with this
    /// configuration and data:
    /// - an architecture key that differs is refused (a ConfigError listing each key, old -> new);
    /// - any other changed key (except `layoutKeys` and the budget keys, `isBudgetKey`) is refused unless
    ///   `allowConfigChange`; changes are logged and recorded in the history (`config_changes`), which keeps its
    ///   original `config`;
    /// - a non-zero tokenizer fingerprint of the checkpoint that differs from the data's is refused (DataError).
    /// - a damaged checkpoint (a failed checksum) is refused (DataError) unless `verified` says it was checked.
    public func resume(from checkpoint: String, allowConfigChange: Bool = false, verified: Bool = false) throws {
        let st: CheckpointState
        do {
            HDF5Library.lock.lock()
            defer { HDF5Library.lock.unlock() }
            do { st = try Checkpoint.readState(checkpoint) } catch let e as CheckpointMissingError { throw e } catch let e as DataError {
                throw e
            } catch { throw DataError("checkpoint \(checkpoint): cannot read it: \(error)") }
        }
        if !verified {
            do { try Checkpoint.verify(checkpoint) } catch let e as DataError { throw e } catch {
                throw DataError("checkpoint \(checkpoint): damaged: \(Checkpoint.oneLine(error))")
            }
        }
        let have = data.fingerprint, had = st.tokenizerFingerprint
        if have != 0 && had != 0 && have != had {
            throw DataError("checkpoint \(checkpoint) was trained on data of tokenizer fingerprint \(TokenizerFingerprint.hex(had)), "
                            + "but \(data.fingerprintSource) has \(TokenizerFingerprint.hex(have)): another tokenizer's tokens")
        }
        let diffs = config.differences(from: st.config)
        let architecture = Set(RunConfig.architectureKeys)
        let arch = diffs.filter { architecture.contains($0.key) }
        if !arch.isEmpty {
            throw ConfigError(key: nil, "checkpoint \(checkpoint): the architecture differs from the configuration in "
                              + arch.map { "\($0.key) \($0.old) -> \($0.new)" }.joined(separator: ", ")
                              + "; resume with the checkpoint's values or start a new run")
        }
        let refused = diffs.filter { !TrainingSession.layoutKeys.contains($0.key) && !TrainingSession.isBudgetKey($0.key) }
        if !refused.isEmpty && !allowConfigChange {
            throw ConfigError(key: nil, "checkpoint \(checkpoint) was written with a different configuration: "
                              + refused.map { "\($0.key) \($0.old) -> \($0.new)" }.joined(separator: ", ")
                              + "; resume with the checkpoint's values, or pass --allow-config-change to continue with "
                              + "the new ones (the change and its step are recorded in metrics.h5)")
        }
        if have == 0 { tokenizerFingerprint = had }
        configChanges = diffs
        scheduleNote = TrainingSession.scheduleChange(from: st.config, to: config, at: st.counters.step)
        resumeFrom = checkpoint
        resumeStep = st.counters.step
    }

    /// How a changed step or token budget moves the learning-rate schedule at resumed step `step`, or nil.
    static func scheduleChange(from old: RunConfig, to new: RunConfig, at step: Int) -> String? {
        let before = Trainer.stepBudget(old), after = Trainer.stepBudget(new)
        guard before != after else { return nil }
        let a = LearningRateSchedule(old.train, totalSteps: before), b = LearningRateSchedule(new.train, totalSteps: after)
        return String(format: "learning-rate schedule: the step budget changes from %d to %d steps, so the cosine now reaches "
                      + "its minimum at step %d instead of %d; the lr of step %d changes from %.3e to %.3e",
                      before, after, after, before, step + 1, a(step), b(step))
    }

    /// Prints a line on rank 0 and appends it to RUN_DIR/train.log.
    public func log(_ line: String) {
        guard isRoot else { return }
        say(line)
        // Foundation's write(_:) traps on an I/O error (a full disk); a lost log line is reported by the
        // history's flush, which follows every logged step and throws a SystemError naming its file.
        try? logHandle?.write(contentsOf: Data((line + "\n").utf8))
    }

    private func openRunDirectory() throws {
        guard isRoot, let dir = runDirectory else { return }
        try SystemError.wrapping("cannot create run directory \(dir)") {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        }
        try SystemError.wrapping("cannot write \(dir)/config.yaml") {
            try config.toYAML().write(toFile: dir + "/config.yaml", atomically: true, encoding: .utf8)
        }
        let logPath = dir + "/train.log"
        if !FileManager.default.fileExists(atPath: logPath) {
            guard FileManager.default.createFile(atPath: logPath, contents: nil) else { throw SystemError("cannot create \(logPath)") }
        }
        logHandle = FileHandle(forWritingAtPath: logPath)
        logHandle?.seekToEndOfFile()
        try restoreHistorySnapshot(dir)
        try openHistoryRecovering(dir)
        try metrics?.truncate(afterStep: Int64(trainer.counters.step))
        if let blas = BlasKernelSelection.current {
            try metrics?.setRootAttribute("blas_kernels", blas.inUse)
            try metrics?.setRootAttribute("blas_kernels_reason", blas.reason)
        }
        let step = Int64(trainer.counters.step)
        try metrics?.recordConfigChanges(configChanges.map {
            MetricsHistory.ConfigChange(step: step, key: $0.key, old: JSONScalar($0.old), new: JSONScalar($0.new))
        })
    }

    /// A resumed run's history is the snapshot taken with its checkpoint (every row up to that step,
    /// written before the checkpoint got its final name), whatever a kill did to metrics.h5 since.
    private func restoreHistorySnapshot(_ dir: String) throws {
        guard let ck = resumeFrom, trainer.counters.step > 0 else { return }
        let snapshot = Checkpoint.historySnapshotPath(ck)
        if URL(fileURLWithPath: ck).deletingLastPathComponent().standardizedFileURL.path
            == URL(fileURLWithPath: dir + "/checkpoints").standardizedFileURL.path,
           FileManager.default.fileExists(atPath: snapshot) {
            try copyReplacing(snapshot, to: dir + "/metrics.h5")
        }
    }

    /// Opens RUN_DIR/metrics.h5; an unreadable one is started anew when nothing was checkpointed, or restored
    /// from the copy that run directories written before per-checkpoint snapshots kept.
    private func openHistoryRecovering(_ dir: String) throws {
        let path = dir + "/metrics.h5"
        let legacySnapshot = dir + "/.metrics.h5.at-checkpoint"
        do {
            try openHistory(path)
        } catch where trainer.counters.step == 0 && FileManager.default.fileExists(atPath: path) {
            // Nothing was checkpointed: the damaged history holds no row that a resume keeps.
            log("warning: \(path) is unreadable (\(error)); starting a new history")
            try FileManager.default.removeItem(atPath: path)
            try openHistory(path)
        } catch where FileManager.default.fileExists(atPath: legacySnapshot) && trainer.counters.step > 0 {
            // Run directories written before per-checkpoint snapshots: the copy taken at the last checkpoint.
            log("warning: \(path) is unreadable (\(error)); restoring the copy taken at the last checkpoint")
            try copyReplacing(legacySnapshot, to: path)
            try openHistory(path)
        }
    }

    private func openHistory(_ path: String) throws {
        // Stage gate: a resumed run continues, so it drops an earlier stop marker; the stop rule
        // sees the history up to the checkpoint's step.
        if FileManager.default.fileExists(atPath: path) {
            try MetricsHistory.clearStopped(metricsPath: path)
            gateHistory = try RunMetrics.read(path).gateHistory.upTo(step: trainer.counters.step)
        }
        metrics = try MetricsHistory(path: path, configJSON: config.toJSON(), iterations: config.model.depth,
                                     numExperts: config.moe.numExperts, replaceConfig: trainer.counters.step == 0,
                                     biasRouters: ModelBuffers.routerBiasPaths(config).count,
                                     agreement: config.moe.experts == .shared)
    }

    /// Copies `source` over `destination` through a temporary name (fsynced, then renamed), so a kill
    /// leaves either the old file or the complete copy.
    private func copyReplacing(_ source: String, to destination: String) throws {
        let tmp = destination + ".restoring"
        try? FileManager.default.removeItem(atPath: tmp)
        do {
            try SystemError.wrapping("cannot restore \(destination) from \(source)") {
                try FileManager.default.copyItem(atPath: source, toPath: tmp)
            }
            fsyncFile(tmp)
            guard rename(tmp, destination) == 0 else { throw SystemError("cannot restore \(destination) from \(source)") }
        } catch {
            unlink(tmp)
            throw error
        }
    }

    /// Whether the history records /experts/agreement (one shared pool, two or more iterations).
    private var recordsAgreement: Bool { config.moe.experts == .shared && !config.moe.isDense && config.model.depth > 1 }

    /// The routers' selection biases now ([Q·E]), or nil when the run has none.
    private func currentBias() -> [Float]? {
        let n = ModelBuffers.routerBiasPaths(config).count * config.moe.numExperts
        return n > 0 ? Array(UnsafeBufferPointer(start: trainer.model.selectionBias.pointer, count: n)) : nil
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
        if let blas = BlasKernelSelection.current {
            let byRank = ctx.blasWorkersByRank
            let threads = Set(byRank).count > 1
                ? "thread(s) per rank " + byRank.map(String.init).joined(separator: ",")
                  + " (each node's cores over its ranks)"
                : "\(ctx.blasWorkers) thread(s) per rank"
            lines.append("BLAS: \(blas.inUse) kernels (\(blas.reason)), \(threads)")
        }
        lines.append("element-wise kernels: \(VectorKernels.level); expert products: \(ctx.expertProducts)")
        lines.append("budget: \(trainer.totalSteps) steps of \(c.train.globalBatch * c.model.seqLen) tokens")
        return lines
    }

    /// Trains to the step budget (or a stage-gate stop). Returns the last step's report (nil when no step ran);
    /// earlier reports are summed into the logged intervals, not kept.
    @discardableResult
    public func run() throws -> StepReport? {
        try start()
        defer { metrics?.close(); try? logHandle?.close() }
        for line in banner() { log(line) }
        let c = config
        var progress = LoopProgress(
            interval: newInterval(),
            eta: RunETA(totalSteps: trainer.totalSteps, evalInterval: c.train.evalInterval,
                        checkpointInterval: c.train.checkpointInterval, evalTokens: c.train.evalTokens,
                        evaluates: data.valid != nil))
        Preemption.install()
        while !trainer.isFinished {
            let rep = try step(&progress)
            // A preemption signal may reach only some ranks: they agree, so all stop after the same step.
            let preempted = trainer.ctx.world.anyRank(Preemption.requested)
            let last = trainer.isFinished || preempted
            if rep.step % c.train.logInterval == 0 || last { try recordInterval(ending: rep, &progress) }
            // A preempted run saves first: the signal's grace period may not cover an evaluation.
            var gateStops = false
            if data.valid != nil && !preempted && (rep.step % c.train.evalInterval == 0 || trainer.isFinished) {
                gateStops = try evaluateAndGate(after: rep, last: last, &progress.eta)
            }
            if rep.step % c.train.checkpointInterval == 0 || last || gateStops { try timedCheckpoint(&progress.eta) }
            if gateStops {
                try stopForGate(after: rep)
                break
            }
            if preempted { throw stopForPreemption(after: rep) }
        }
        return progress.lastReport
    }

    /// What the loop carries from step to step: the sums of the interval being logged, the ETA's timings
    /// and the last step's report.
    private struct LoopProgress {
        var interval: IntervalStats
        var eta: RunETA
        var lastReport: StepReport? = nil
    }

    private func newInterval() -> IntervalStats {
        IntervalStats(R: config.model.depth, E: config.moe.numExperts, agreement: recordsAgreement)
    }

    /// Resume: loads the checkpoint (when `resume` was given), opens the run directory and the history,
    /// and logs how this run continues the earlier one.
    private func start() throws {
        if let path = resumeFrom {
            try SlowPhase.run("loading the checkpoint", show: isRoot) { try Checkpoint.load(path, into: trainer) }
        }
        for w in data.warnings { log(w) }
        // Every rank has finished reading before rank 0 opens the history (emulated ranks share one HDF5 library).
        trainer.ctx.world.barrier()
        if isRoot { KillPoint.currentStep = trainer.counters.step }
        try openRunDirectory()
        if let path = resumeFrom { log("resumed from \(path) at step \(trainer.counters.step)") }
        if !configChanges.isEmpty {
            log("configuration changed on resume at step \(trainer.counters.step): "
                + configChanges.map { "\($0.key) \($0.old) -> \($0.new)" }.joined(separator: ", ")
                + " (recorded in metrics.h5 config_changes; its config keeps the original values)")
        }
        if let note = scheduleNote { log(note) }
    }

    /// Step: one optimizer step, timed for the ETA and added to the interval being logged.
    private func step(_ progress: inout LoopProgress) throws -> StepReport {
        try beforeStep?(trainer.counters.step + 1)
        if isRoot { KillPoint.currentStep = trainer.counters.step + 1 }
        KillPoint.stepStart.reached()
        let stepStarted = Date()
        let tokensBefore = trainer.counters.tokens
        let rep = trainer.trainStep()
        progress.eta.addSteps(1, tokens: trainer.counters.tokens - tokensBefore, seconds: Date().timeIntervalSince(stepStarted))
        progress.lastReport = rep
        progress.interval.add(rep)
        if rep.skipped { log("step \(rep.step): non-finite loss or gradient (loss \(rep.loss), grad norm \(rep.gradNorm)); update skipped") }
        return rep
    }

    /// History: the progress line for the interval ending at `rep`, its rows in metrics.h5 (train and
    /// experts) and the stage gate's points; then a new interval starts.
    private func recordInterval(ending rep: StepReport, _ progress: inout LoopProgress) throws {
        let interval = progress.interval
        let tps = Double(interval.tokens) / max(interval.time, 1e-9)
        log(String(format: "step %d/%d | loss %.4f | ce %.4f | aux %.4f | lr %.2e | grad norm %.3f | %.0f tok/s | epoch %.3f | ETA %@",
                   rep.step, trainer.totalSteps, rep.loss, rep.ce, rep.aux, rep.lr, rep.gradNorm, tps,
                   trainer.loader.epochFraction, duration(progress.eta.seconds(after: rep.step) ?? 0)))
        if isRoot {
            try metrics?.append(TrainRow(step: Int64(rep.step), tokens: Int64(rep.tokens), epoch: trainer.loader.epochFraction,
                                         loss: rep.loss, ce: rep.ce, aux: rep.aux, z: rep.z, lr: rep.lr,
                                         gradNorm: rep.gradNorm, tokensPerSec: tps,
                                         stepTime: interval.time / Double(max(interval.steps, 1)),
                                         nanEvents: Int64(trainer.counters.nanEvents)))
            KillPoint.historyRow.reached()
            gateHistory.train.append(TrainPoint(step: rep.step, loss: rep.loss, tokensPerSec: tps))
            if config.moe.numExperts > 0 { try recordRouting(interval, step: rep.step) }
            try metrics?.flush()
        }
        progress.interval = newInterval()
    }

    /// The interval's /experts row, and its load summary as the stage gate's routing point (rank 0).
    private func recordRouting(_ interval: IntervalStats, step: Int) throws {
        let row = interval.expertRow(step: Int64(step), bias: currentBias())
        try metrics?.append(row)
        let s = MetricsHistory.loadSummary(counts: row.counts, iterations: config.model.depth, experts: config.moe.numExperts)
        gateHistory.routing.append(RoutingPoint(step: step, worstOf: s.entropy, maxLoad: s.maxLoad, minLoad: s.minLoad))
    }

    /// Eval and gate: scores the validation tokens after step `rep`, records the result, and (with
    /// `gate.enabled`, before the last step) asks the stop rule. Returns whether the gate stops the run,
    /// the same answer on every rank.
    private func evaluateAndGate(after rep: StepReport, last: Bool, _ eta: inout RunETA) throws -> Bool {
        guard let valid = data.valid else { return false }
        let c = config
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
        guard c.gate.enabled && !last else { return false }
        // Stage gate: rank 0 applies the stop rule to its history; every rank follows its answer.
        let decision = isRoot ? StageGate.stop(gateHistory, c.gate) : nil
        let stops = trainer.ctx.world.anyRank(decision?.stop == true)
        if stops { gateStop = decision ?? StopDecision(stop: true, clauses: []) }
        return stops
    }

    /// Checkpoint policy's write, timed for the ETA.
    private func timedCheckpoint(_ eta: inout RunETA) throws {
        let saveStarted = Date()
        try saveCheckpoint()
        eta.addCheckpoint(seconds: Date().timeIntervalSince(saveStarted))
    }

    /// Stage gate stop: the checkpoint is written; record the reason on metrics.h5 (the run ends with status 0).
    private func stopForGate(after rep: StepReport) throws {
        log("stage gate: stopped after step \(rep.step) of \(trainer.totalSteps): \(gateStop?.reason ?? "")")
        metrics?.close()
        if isRoot, let dir = runDirectory {
            try MetricsHistory.markStopped(metricsPath: dir + "/metrics.h5", step: rep.step, reason: gateStop?.reason ?? "stop")
        }
    }

    /// Preemption: the checkpoint is written; the error the caller ends with (exit status 75 on every rank).
    private func stopForPreemption(after rep: StepReport) -> PreemptedError {
        log("\(Preemption.signalName) received: stopped after step \(rep.step)")
        return PreemptedError(step: rep.step, checkpoint: runDirectory.map { Checkpoint.path(runDirectory: $0, step: rep.step) })
    }

    /// Writes RUN_DIR/checkpoints/step-N.h5 (all ranks) and keeps the newest train.keep_checkpoints.
    ///
    /// Rank 0 first copies the flushed history to the checkpoint's snapshot (`Checkpoint.historySnapshotPath`),
    /// so that a checkpoint never exists without the history up to its step: a resume restores that
    /// snapshot, and no kill between the checkpoint and the history can lose or repeat a row.
    public func saveCheckpoint() throws {
        guard let dir = runDirectory else { return }
        let path = Checkpoint.path(runDirectory: dir, step: trainer.counters.step)
        let start = Date()
        var failure: Error? = nil
        if isRoot {
            do { try snapshotMetrics(dir, for: path) } catch { failure = error }
        }
        let snapshotFailed = trainer.ctx.world.anyRank(failure != nil)
        if let failure { throw failure }
        if snapshotFailed { throw TrainingError("checkpoint \(path): rank 0 could not snapshot the history") }
        KillPoint.afterSnapshot.reached()
        do { try Checkpoint.save(trainer, to: path, tokenizerFingerprint: tokenizerFingerprint) } catch {
            if isRoot { unlink(Checkpoint.historySnapshotPath(path)) }   // the snapshot of a checkpoint that never was
            throw error
        }
        if isRoot {
            Checkpoint.prune(runDirectory: dir, keep: config.train.keepCheckpoints)
        }
        log(String(format: "checkpoint %@ (%.2f s)", path, Date().timeIntervalSince(start)))
    }

    /// Copies the flushed history to the snapshot of checkpoint `checkpoint` (temporary name, fsync, rename).
    private func snapshotMetrics(_ dir: String, for checkpoint: String) throws {
        guard let metrics else { return }
        try metrics.flush()
        let snapshot = Checkpoint.historySnapshotPath(checkpoint), tmp = snapshot + ".tmp"
        try SystemError.wrapping("cannot create \(dir)/checkpoints") {
            try FileManager.default.createDirectory(atPath: dir + "/checkpoints", withIntermediateDirectories: true)
        }
        try? FileManager.default.removeItem(atPath: tmp)
        do {
            // A failed copy (a full disk) must not leave the partial copy behind.
            try SystemError.wrapping("cannot write \(snapshot)") {
                try FileManager.default.copyItem(atPath: dir + "/metrics.h5", toPath: tmp)
            }
            fsyncFile(tmp)
            guard rename(tmp, snapshot) == 0 else { throw SystemError("cannot write \(snapshot)") }
        } catch {
            unlink(tmp)
            throw error
        }
    }
}

extension JSONScalar {
    init(_ v: ConfigValue) {
        switch v {
        case .int(let x): self = .int(x)
        case .double(let x): self = .double(x)
        case .bool(let x): self = .bool(x)
        case .string(let x): self = .string(x)
        case .null: self = .null
        }
    }
}

/// Per-interval sums for the metrics history's /experts rows and throughput.
struct IntervalStats {
    let R: Int, E: Int
    var steps = 0, tokens = 0, time = 0.0
    var counts: [Int64], dropped: [Int64], probSum: [Double], routed: [Int64]
    /// [R−1] Σ over tokens of |K_r ∩ K_{r+1}| / k; nil when the run does not record agreement.
    var agreementSum: [Double]?
    init(R: Int, E: Int, agreement: Bool = false) {
        self.R = R; self.E = E
        counts = .init(repeating: 0, count: R * E); dropped = .init(repeating: 0, count: R)
        probSum = .init(repeating: 0, count: R * E); routed = .init(repeating: 0, count: R)
        agreementSum = agreement && R > 1 ? .init(repeating: 0, count: R - 1) : nil
    }
    mutating func add(_ r: StepReport) {
        steps += 1; time += r.stepTime
        tokens += r.stepTokens
        for i in 0 ..< counts.count { counts[i] += r.counts[i]; probSum[i] += r.probSum[i] }
        for i in 0 ..< R { dropped[i] += r.dropped[i]; routed[i] += r.routedTokens[i] }
        if agreementSum != nil { for i in 0 ..< R - 1 { agreementSum![i] += r.agreementSum[i] } }
    }
    func expertRow(step: Int64, bias: [Float]? = nil) -> ExpertRow {
        var mean = [Float](repeating: 0, count: R * E)
        for r in 0 ..< R where routed[r] > 0 {
            for e in 0 ..< E { mean[r * E + e] = Float(probSum[r * E + e] / Double(routed[r])) }
        }
        // Agreement of iterations r and r+1 over the tokens both routed (the same tokens: routed[r + 1]).
        let agreement = agreementSum.map { sums in (0 ..< R - 1).map { routed[$0 + 1] > 0 ? sums[$0] / Double(routed[$0 + 1]) : 0 } }
        return ExpertRow(step: step, counts: counts, dropped: dropped, probMean: mean, bias: bias, agreement: agreement)
    }
}

/// Asks the operating system to put `path`'s bytes on disk (best effort: a SIGKILL loses nothing that was written).
func fsyncFile(_ path: String) {
    let fd = open(path, O_RDONLY)
    if fd >= 0 { _ = fsync(fd); _ = close(fd) }
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

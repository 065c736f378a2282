// Reading a metrics.h5 (SPEC section 7), finished or still being written: every column, the
// configuration attributes and the stop marker the trainer leaves when a stage gate ends the run
// early. A resumed run reads its stage-gate history from it; the gates and reports read the rest
// (Experiments/RunRecord.swift).
//
// Stop marker: root attributes of metrics.h5, written by rank 0 after the history is
// closed when `gate.enabled` stops a run:
//   stopped_step    int64   the step after which the run stopped (its last checkpoint)
//   stopped_reason  string  StopDecision.reason: the clauses and their numbers
// A resumed run removes both before it appends again.
import Foundation
import Configuration
import HDF5

/// The columns of one run's metrics.h5, each group cut to its shortest dataset (a live file).
public struct RunMetrics: Sendable {
    public var trainStep: [Int64] = [], trainTokens: [Int64] = []
    public var trainLoss: [Double] = [], trainCE: [Double] = [], trainAux: [Double] = [], trainZ: [Double] = []
    public var trainLR: [Double] = [], trainEpoch: [Double] = [], evalEpoch: [Double] = []
    public var trainGradNorm: [Double] = [], trainTokensPerSec: [Double] = [], trainStepTime: [Double] = []
    public var trainNaNEvents: [Int64] = []
    public var evalStep: [Int64] = [], evalTokens: [Int64] = [], evalLoss: [Double] = [], evalPPL: [Double] = []
    public var evalScored: [Int64] = []
    /// `/experts`: R and E (0 for a dense run), counts `[S, R, E]`, dropped `[S, R]`, summaries `[S, R]`.
    public var iterations = 0, numExperts = 0
    public var expertStep: [Int64] = [], counts: [Int64] = [], dropped: [Int64] = []
    public var entropy: [Double] = [], maxLoad: [Double] = [], minLoad: [Double] = []
    public var stoppedStep: Int? = nil
    public var stoppedReason: String? = nil
    /// Root attributes: the configuration the run started with (JSON), and the changes of later resumes.
    public var configJSON: String? = nil
    public var configChanges: [MetricsHistory.ConfigChange] = []

    public init() {}

    /// Reads `path` (read-only, without file locking, so it works while a trainer writes it). Whatever is
    /// wrong with the file (unreadable, a missing or reshaped dataset, columns of different lengths) is a
    /// MetricsHistoryError naming it (bad data, exit status 3).
    public static func read(_ path: String) throws -> RunMetrics {
        HDF5Library.lock.lock()
        defer { HDF5Library.lock.unlock() }
        do { return try readLocked(path) } catch let e as MetricsHistoryError { throw e } catch {
            throw MetricsHistoryError(path: path, message: "damaged or not a metrics history: "
                + "\(error)".split(whereSeparator: \.isNewline).joined(separator: " "))
        }
    }

    private static func readLocked(_ path: String) throws -> RunMetrics {
        let f = try H5File.open(path: path, readOnly: true, fileLocking: false)
        defer { f.close() }
        let fmt = (try? f.stringAttribute("format")) ?? ""
        guard fmt == MetricsHistory.format else {
            throw MetricsHistoryError(path: path, message: "not a moe-dist metrics history (format \"\(fmt)\")")
        }
        var m = RunMetrics()
        let tn = try rows(f, path, "train", ["step", "tokens", "epoch", "loss", "ce", "aux", "z", "lr", "grad_norm", "tokens_per_sec",
                                             "step_time", "nan_events"])
        m.trainLR = try col(f, path, "train/lr", tn); m.trainEpoch = try col(f, path, "train/epoch", tn)
        m.trainStep = try col(f, path, "train/step", tn); m.trainTokens = try col(f, path, "train/tokens", tn)
        m.trainLoss = try col(f, path, "train/loss", tn); m.trainCE = try col(f, path, "train/ce", tn)
        m.trainAux = try col(f, path, "train/aux", tn); m.trainZ = try col(f, path, "train/z", tn)
        m.trainGradNorm = try col(f, path, "train/grad_norm", tn); m.trainTokensPerSec = try col(f, path, "train/tokens_per_sec", tn)
        m.trainStepTime = try col(f, path, "train/step_time", tn); m.trainNaNEvents = try col(f, path, "train/nan_events", tn)
        let en = try rows(f, path, "eval", ["step", "tokens", "epoch", "loss", "ppl", "scored"])
        m.evalEpoch = try col(f, path, "eval/epoch", en)
        m.evalStep = try col(f, path, "eval/step", en); m.evalTokens = try col(f, path, "eval/tokens", en)
        m.evalLoss = try col(f, path, "eval/loss", en); m.evalPPL = try col(f, path, "eval/ppl", en); m.evalScored = try col(f, path, "eval/scored", en)
        if try f.exists("experts") { try readExperts(f, path, into: &m) }
        try readRootAttributes(f, path, into: &m)
        return m
    }

    /// The rows of `group`: its shortest column's length.
    private static func rows(_ f: H5File, _ path: String, _ group: String, _ names: [String]) throws -> Int {
        try names.map { name -> Int in
            let shape = try f.openDataset(group + "/" + name).shape()
            guard let n = shape.first else { throw MetricsHistoryError(path: path, message: "/\(group)/\(name) is a scalar, not a column") }
            return n
        }.min() ?? 0
    }

    /// The first n rows of a column of `width` values per row; a shorter column is damage, not fewer rows.
    private static func col<T: H5Element>(_ f: H5File, _ path: String, _ name: String, _ n: Int, width: Int = 1) throws -> [T] {
        try f.openDataset(name).verifyChunkIndex(rows: n)
        let all = try f.read(name) as [T]
        guard all.count >= n * width else {
            throw MetricsHistoryError(path: path, message: "/\(name) holds \(all.count) values, \(n) rows need \(n * width)")
        }
        return Array(all.prefix(n * width))
    }

    /// `/experts`: R and E from the counts' shape, then every column.
    private static func readExperts(_ f: H5File, _ path: String, into m: inout RunMetrics) throws {
        let shape = try f.openDataset("experts/counts").shape()
        guard shape.count == 3, shape[1] > 0, shape[2] > 0 else {
            throw MetricsHistoryError(path: path, message: "/experts/counts has shape \(shape), not [rows, iterations, experts]")
        }
        m.iterations = shape[1]; m.numExperts = shape[2]
        let R = m.iterations, E = m.numExperts
        let xn = try rows(f, path, "experts", ["step", "counts", "dropped", "entropy", "max_load", "min_load"])
        m.expertStep = try col(f, path, "experts/step", xn)
        m.counts = try col(f, path, "experts/counts", xn, width: R * E)
        m.dropped = try col(f, path, "experts/dropped", xn, width: R)
        m.entropy = try col(f, path, "experts/entropy", xn, width: R)
        m.maxLoad = try col(f, path, "experts/max_load", xn, width: R)
        m.minLoad = try col(f, path, "experts/min_load", xn, width: R)
    }

    /// The stop marker and the configuration attributes.
    private static func readRootAttributes(_ f: H5File, _ path: String, into m: inout RunMetrics) throws {
        if try f.hasAttribute("stopped_step") { m.stoppedStep = Int(try f.int64Attribute("stopped_step")) }
        if try f.hasAttribute("stopped_reason") { m.stoppedReason = try f.checkedStringAttribute("stopped_reason") }
        if try f.hasAttribute("config") { m.configJSON = try f.checkedStringAttribute("config") }
        if try f.hasAttribute("config_changes") {
            let text = try f.checkedStringAttribute("config_changes")
            guard let changes = try? JSONDecoder().decode([MetricsHistory.ConfigChange].self, from: Data(text.utf8)) else {
                throw MetricsHistoryError(path: path, message: "the config_changes attribute is not a JSON list of changes")
            }
            m.configChanges = changes
        }
    }

    /// Eval, train and routing points for the stage gates (routing: the worst iteration of each row).
    public var gateHistory: GateHistory {
        let evals = evalStep.indices.map { EvalPoint(step: Int(evalStep[$0]), tokens: Int(evalTokens[$0]), loss: evalLoss[$0]) }
        let train = trainStep.indices.map { TrainPoint(step: Int(trainStep[$0]), loss: trainLoss[$0], tokensPerSec: trainTokensPerSec[$0]) }
        var routing: [RoutingPoint] = []
        let R = iterations
        if R > 0 {
            for i in expertStep.indices {
                let row = i * R ..< (i + 1) * R
                routing.append(RoutingPoint(step: Int(expertStep[i]), worstOf: entropy[row], maxLoad: maxLoad[row], minLoad: minLoad[row]))
            }
        }
        return GateHistory(evals: evals, train: train, routing: routing)
    }
}

extension MetricsHistory {
    /// Writes the stop marker (root attributes stopped_step, stopped_reason) on a closed metrics.h5.
    public static func markStopped(metricsPath: String, step: Int, reason: String) throws {
        HDF5Library.lock.lock()
        defer { HDF5Library.lock.unlock() }
        let f = try H5File.open(path: metricsPath, readOnly: false, fileLocking: false)
        defer { f.close() }
        try f.setAttribute("stopped_step", Int64(step))
        try f.setCheckedAttribute("stopped_reason", reason)
        try f.syncToDisk()
    }

    /// Removes the stop marker (a resumed run continues), if the file exists and has one.
    public static func clearStopped(metricsPath: String) throws {
        guard FileManager.default.fileExists(atPath: metricsPath) else { return }
        HDF5Library.lock.lock()
        defer { HDF5Library.lock.unlock() }
        let f = try H5File.open(path: metricsPath, readOnly: false, fileLocking: false)
        defer { f.close() }
        guard try f.hasAttribute("stopped_step") || f.hasAttribute("stopped_reason") else { return }
        try f.removeAttribute("stopped_step")
        try f.removeCheckedAttribute("stopped_reason")
        try f.syncToDisk()
    }
}

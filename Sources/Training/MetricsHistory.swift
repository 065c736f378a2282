// MetricsHistory: the run's metrics.h5 (SPEC section 7): one row per logged
// train step, per evaluation and per expert-load summary, appended as training
// runs, each append flushed so that readers (h5py, notebooks) can look in.
import Foundation
import HDF5

// MARK: Rows

/// One `/train` row: the optimizer step it was logged at and its measurements.
public struct TrainRow: Equatable {
    public var step, tokens: Int64
    public var epoch, loss, ce, aux, z, lr, gradNorm, tokensPerSec, stepTime: Double
    /// Cumulative count of non-finite losses or gradients so far.
    public var nanEvents: Int64

    public init(step: Int64, tokens: Int64, epoch: Double, loss: Double, ce: Double, aux: Double, z: Double,
                lr: Double, gradNorm: Double, tokensPerSec: Double, stepTime: Double, nanEvents: Int64) {
        self.step = step; self.tokens = tokens; self.epoch = epoch; self.loss = loss; self.ce = ce
        self.aux = aux; self.z = z; self.lr = lr; self.gradNorm = gradNorm
        self.tokensPerSec = tokensPerSec; self.stepTime = stepTime; self.nanEvents = nanEvents
    }
}

/// One `/eval` row.
public struct EvalRow: Equatable {
    public var step, tokens: Int64
    public var epoch, loss, ppl: Double
    /// Number of scored tokens.
    public var scored: Int64

    public init(step: Int64, tokens: Int64, epoch: Double, loss: Double, ppl: Double, scored: Int64) {
        self.step = step; self.tokens = tokens; self.epoch = epoch; self.loss = loss; self.ppl = ppl; self.scored = scored
    }
}

/// One `/experts` row: routing statistics over the interval that ends at `step`.
public struct ExpertRow: Equatable {
    public var step: Int64
    /// Assignments per iteration and expert, before drops: `[R, E]` row-major.
    public var counts: [Int64]
    /// Dropped assignments per iteration: `[R]`.
    public var dropped: [Int64]
    /// Mean router probability per iteration and expert: `[R, E]` row-major.
    public var probMean: [Float]
    /// Each router's selection bias after the row's step: `[Q, E]` (moe.router_bias_rate > 0), else nil.
    public var bias: [Float]?
    /// Mean over the interval's tokens of |K_r ∩ K_{r+1}| / k: `[R − 1]` (shared pool), else nil.
    public var agreement: [Double]?

    public init(step: Int64, counts: [Int64], dropped: [Int64], probMean: [Float], bias: [Float]? = nil,
                agreement: [Double]? = nil) {
        self.step = step; self.counts = counts; self.dropped = dropped; self.probMean = probMean
        self.bias = bias; self.agreement = agreement
    }
}

/// A metrics file that cannot be opened as this run's history, or a row that does not fit it.
public struct MetricsHistoryError: Error, CustomStringConvertible {
    public var path: String
    public var message: String
    public var description: String { "metrics history \(path): \(message)" }
}

// MARK: History file

/// The metrics history of one run (SPEC section 7).
///
/// Layout: `/train/{step,tokens,nan_events}` int64 and `/train/{epoch,loss,ce,aux,z,lr,
/// grad_norm,tokens_per_sec,step_time}` float64, all `[S]`; `/eval/{step,tokens,scored}`
/// int64 and `/eval/{epoch,loss,ppl}` float64, all `[Q]`; `/experts/step` `[S]` int64,
/// `counts` `[S,R,E]` int64, `dropped` `[S,R]` int64, `prob_mean` `[S,R,E]` float32,
/// `entropy`, `max_load`, `min_load` `[S,R]` float64 (absent for a dense run). Every
/// dataset is chunked and extendable along its first axis. Root attributes `format =
/// "moe-dist/metrics"`, `version = 1`, `config` (JSON of the configuration the run started
/// with), and, once a resume changed the configuration (`train --allow-config-change`),
/// `config_changes`: a JSON array with one object per changed key and resume,
/// `{"step": 230, "key": "moe.aux_loss_coef", "old": 0.01, "new": 0.05}` (step: the checkpoint
/// the run resumed from; rows after it were trained with `new`), in resume order. Read it with
/// `json.loads(f.attrs.get("config_changes", "[]"))`.
///
/// Readers: the file is written with HDF5 file locking off and flushed (and fsynced)
/// after every append, so `h5py.File(path, "r")` opens it while the trainer runs and
/// sees every row appended before it opened; reopen to see newer rows. An open that
/// coincides with an append can fail or see one dataset a row longer than the others
/// (SWMR, which would prevent that, is not used: see `H5File`), so a live reader should
/// retry and cut each group to its shortest dataset:
///
///     def read_metrics(path, tries=10):
///         for _ in range(tries):
///             try:
///                 with h5py.File(path, "r") as f:
///                     out = {}
///                     for g in f:
///                         n = min(d.shape[0] for d in f[g].values())
///                         out[g] = {k: d[:n] for k, d in f[g].items()}
///                     return out
///             except OSError:
///                 time.sleep(0.1)
///         raise OSError("could not read " + path)
///
/// Once the writer has closed the file, every group has equal lengths. Only one
/// process may write the file (rank 0).
///
/// Not thread-safe; the trainer uses it from rank 0 only.
public final class MetricsHistory {
    public static let format = "moe-dist/metrics"
    public static let version: Int64 = 1

    public let path: String
    /// `R`, recurrent iterations (rows of each expert summary).
    public let iterations: Int
    /// `E`; 0 for a dense run (no `/experts` group).
    public let numExperts: Int
    /// `Q`, routers with a selection bias (`/experts/bias` `[S, Q, E]`); 0 = no such dataset.
    public let biasRouters: Int
    /// Whether `/experts/agreement` `[S, R − 1]` is kept (moe.experts = shared).
    public let recordsAgreement: Bool

    private var file: H5File?
    private let train: ColumnGroup
    private let eval: ColumnGroup
    private var experts: ColumnGroup?

    /// Rows in each group.
    public var trainCount: Int { train.rows }
    public var evalCount: Int { eval.rows }
    public var expertCount: Int { experts?.rows ?? 0 }
    /// The last step of each group, nil while it is empty.
    public var lastTrainStep: Int64? { train.lastStep }
    public var lastEvalStep: Int64? { eval.lastStep }
    public var lastExpertStep: Int64? { experts?.lastStep }

    /// Opens an existing history (checking format/version, and that R and E match) or creates a new one.
    /// numExperts == 0: no /experts group (dense run).
    ///
    /// An existing file's `config` attribute is replaced by `configJSON` (the run now
    /// appending). If a crash left a group's datasets of unequal length, each group is cut
    /// to its shortest dataset. A new file is built under a temporary name and renamed
    /// into place, so a crash during creation leaves no half-made `path`.
    ///
    /// `replaceConfig: false` (a resumed run) keeps the `config` the history was created with.
    public init(path: String, configJSON: String, iterations R: Int, numExperts E: Int, replaceConfig: Bool = true,
                biasRouters Q: Int = 0, agreement: Bool = false) throws {
        guard R >= 1, E >= 0 else {
            throw MetricsHistoryError(path: path, message: "needs iterations >= 1 and numExperts >= 0 (got R = \(R), E = \(E))")
        }
        self.path = path; self.iterations = R; self.numExperts = E
        biasRouters = E > 0 ? Q : 0; recordsAgreement = E > 0 && agreement && R > 1
        let expertColumns = MetricsHistory.expertColumns(biasRouters: biasRouters, agreement: recordsAgreement)
        if !FileManager.default.fileExists(atPath: path) {
            // HDF5 1.8's format checksums the attributes (the config a notebook reads) as well as the chunks
            try AtomicFile.write(to: path, metadataChecksums: true) { f in
                try MetricsHistory.createLayout(f, configJSON: configJSON, R: R, E: E, Q: Q, expertColumns: expertColumns)
            }
        }
        let f = try H5File.open(path: path, readOnly: false, fileLocking: false)
        let format = (try? f.stringAttribute("format")) ?? "<missing>"
        let version = (try? f.int64Attribute("version")) ?? -1
        guard format == MetricsHistory.format, version == MetricsHistory.version else {
            throw MetricsHistoryError(path: path, message: "not a moe-dist metrics history version 1 (format \"\(format)\", "
                                      + "version \(version)); move it away or choose another run directory")
        }
        train = try ColumnGroup(open: f, name: "train", columns: MetricsHistory.trainColumns, path: path)
        eval = try ColumnGroup(open: f, name: "eval", columns: MetricsHistory.evalColumns, path: path)
        let hasExperts = try f.exists("experts")
        if hasExperts != (E > 0) {
            throw MetricsHistoryError(path: path, message: hasExperts
                ? "the file has an /experts group but this run is dense (numExperts = 0)"
                : "the file has no /experts group but this run has \(E) experts")
        }
        if E > 0 {
            let g = try ColumnGroup(open: f, name: "experts", columns: expertColumns, path: path)
            let shape = try g.dataset("counts").shape()
            guard shape.count == 3, shape[1] == R, shape[2] == E else {
                throw MetricsHistoryError(path: path, message: "/experts/counts has shape \(shape), "
                                          + "but this run has R = \(R) iterations and E = \(E) experts")
            }
            experts = g
        }
        KillPoint.historyOpen.reached()
        if try replaceConfig || !f.hasAttribute("config") { try f.setCheckedAttribute("config", configJSON) }
        file = f
        try flush()
    }

    deinit { close() }

    // MARK: Cutting back on resume

    /// Removes every row whose step > `step` in every group (resume cuts the history back to its checkpoint's step).
    public func truncate(afterStep step: Int64) throws {
        _ = try openFile("truncate")
        try train.truncate(afterStep: step)
        try eval.truncate(afterStep: step)
        try experts?.truncate(afterStep: step)
        let kept = try configChanges().filter { $0.step <= step }
        try writeConfigChanges(kept)
        try flush()
    }

    // MARK: Configuration changes on resume

    /// One changed key of one resume: `config_changes` entries.
    public struct ConfigChange: Equatable, Codable, Sendable {
        public var step: Int64
        public var key: String
        public var old: JSONScalar
        public var new: JSONScalar
        public init(step: Int64, key: String, old: JSONScalar, new: JSONScalar) {
            self.step = step; self.key = key; self.old = old; self.new = new
        }
    }

    /// The recorded configuration changes, oldest first (empty when there are none).
    public func configChanges() throws -> [ConfigChange] {
        let f = try openFile("read config_changes")
        guard try f.hasAttribute("config_changes") else { return [] }
        let text = try f.checkedStringAttribute("config_changes")
        do { return try JSONDecoder().decode([ConfigChange].self, from: Data(text.utf8)) } catch {
            throw MetricsHistoryError(path: path, message: "the config_changes attribute is not a JSON list of changes: \(error)")
        }
    }

    /// Appends the changes of a resume at `step` (after the history was cut back to `step`).
    public func recordConfigChanges(_ changes: [ConfigChange]) throws {
        guard !changes.isEmpty else { return }
        try writeConfigChanges(try configChanges() + changes)
        try flush()
    }

    private func writeConfigChanges(_ changes: [ConfigChange]) throws {
        let f = try openFile("write config_changes")
        if changes.isEmpty {
            if try f.hasAttribute("config_changes") { try f.removeAttribute("config_changes") }
            return
        }
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        try f.setCheckedAttribute("config_changes", String(decoding: try enc.encode(changes), as: UTF8.self))
    }

    // MARK: Appending

    /// Appends a `/train` row; its step must be greater than the last train step.
    public func append(_ row: TrainRow) throws {
        _ = try openFile("append a train row")
        try train.requireAfter(row.step)
        try train.append([
            "step": .int64([row.step]), "tokens": .int64([row.tokens]), "epoch": .float64([row.epoch]),
            "loss": .float64([row.loss]), "ce": .float64([row.ce]), "aux": .float64([row.aux]), "z": .float64([row.z]),
            "lr": .float64([row.lr]), "grad_norm": .float64([row.gradNorm]),
            "tokens_per_sec": .float64([row.tokensPerSec]), "step_time": .float64([row.stepTime]),
            "nan_events": .int64([row.nanEvents]),
        ], step: row.step)
        try flush()
    }

    /// Appends an `/eval` row; its step must be greater than the last eval step.
    public func append(_ row: EvalRow) throws {
        _ = try openFile("append an eval row")
        try eval.requireAfter(row.step)
        try eval.append([
            "step": .int64([row.step]), "tokens": .int64([row.tokens]), "epoch": .float64([row.epoch]),
            "loss": .float64([row.loss]), "ppl": .float64([row.ppl]), "scored": .int64([row.scored]),
        ], step: row.step)
        try flush()
    }

    /// Appends an `/experts` row, computing entropy, max_load and min_load from `counts`
    /// (see `loadSummary`); its step must be greater than the last expert step.
    public func append(_ row: ExpertRow) throws {
        _ = try openFile("append an experts row")
        guard let experts else {
            throw MetricsHistoryError(path: path, message: "an experts row was given for a dense run (numExperts = 0)")
        }
        let R = iterations, E = numExperts
        guard row.counts.count == R * E, row.dropped.count == R, row.probMean.count == R * E else {
            throw MetricsHistoryError(path: path, message: "experts row at step \(row.step) has counts \(row.counts.count), "
                                      + "dropped \(row.dropped.count), prob_mean \(row.probMean.count) values; "
                                      + "expected \(R * E), \(R), \(R * E) (R = \(R), E = \(E))")
        }
        if row.counts.contains(where: { $0 < 0 }) || row.dropped.contains(where: { $0 < 0 }) {
            throw MetricsHistoryError(path: path, message: "experts row at step \(row.step) has negative counts")
        }
        guard (row.bias?.count ?? 0) == biasRouters * E, (row.agreement?.count ?? 0) == (recordsAgreement ? R - 1 : 0) else {
            throw MetricsHistoryError(path: path, message: "experts row at step \(row.step) has bias \(row.bias?.count ?? 0) and "
                                      + "agreement \(row.agreement?.count ?? 0) values; expected \(biasRouters * E) and "
                                      + "\(recordsAgreement ? R - 1 : 0)")
        }
        try experts.requireAfter(row.step)
        let s = MetricsHistory.loadSummary(counts: row.counts, iterations: R, experts: E)
        var values: [String: ColumnValues] = [
            "step": .int64([row.step]), "counts": .int64(row.counts), "dropped": .int64(row.dropped),
            "prob_mean": .float32(row.probMean), "entropy": .float64(s.entropy),
            "max_load": .float64(s.maxLoad), "min_load": .float64(s.minLoad),
        ]
        if biasRouters > 0 { values["bias"] = .float32(row.bias ?? []) }
        if recordsAgreement { values["agreement"] = .float64(row.agreement ?? []) }
        try experts.append(values, step: row.step)
        try flush()
    }

    /// Load balance of one interval, per iteration `r`, from `counts` `[R, E]`:
    /// `l_e = counts[r, e] / Σ_e counts[r, e]`,
    /// `entropy = −Σ_e l_e ln l_e / ln E` (terms with `l_e = 0` count 0; 1 = perfectly even),
    /// `max_load = E · max_e l_e`, `min_load = E · min_e l_e` (1 = perfectly even).
    /// An iteration with no assignments gives entropy 0 and loads 0. With `E = 1` the
    /// load is trivially even: entropy 1 and loads 1.
    public static func loadSummary(counts: [Int64], iterations R: Int, experts E: Int)
        -> (entropy: [Double], maxLoad: [Double], minLoad: [Double]) {
        precondition(counts.count == R * E, "counts must be [R, E]")
        var entropy = [Double](repeating: 0, count: R)
        var maxLoad = entropy, minLoad = entropy
        for r in 0 ..< R {
            let row = counts[r * E ..< (r + 1) * E]
            let total = Double(row.reduce(0, +))
            guard total > 0 else { continue }
            var h = 0.0, lo = Double.infinity, hi = 0.0
            for c in row {
                let l = Double(c) / total
                if l > 0 { h -= l * log(l) }
                lo = min(lo, l); hi = max(hi, l)
            }
            entropy[r] = E > 1 ? h / log(Double(E)) : 1
            maxLoad[r] = Double(E) * hi
            minLoad[r] = Double(E) * lo
        }
        return (entropy, maxLoad, minLoad)
    }

    // MARK: Flushing and closing

    /// Writes everything to the file and fsyncs it (appends and truncate already do).
    public func flush() throws {
        try openFile("flush").syncToDisk()
    }

    /// Sets a root string attribute (e.g. the BLAS kernels of the latest start), replacing an earlier value.
    public func setRootAttribute(_ name: String, _ value: String) throws {
        try openFile("set \(name)").setAttribute(name, value)
    }

    /// Flushes and closes the file. Idempotent; later appends throw.
    public func close() {
        guard let f = file else { return }
        try? f.flush()
        f.close()
        file = nil
    }

    private func openFile(_ operation: String) throws -> H5File {
        guard let f = file else { throw MetricsHistoryError(path: path, message: "cannot \(operation): the history is closed") }
        return f
    }

    // MARK: Layout (SPEC section 7)

    static let trainColumns: [Column] = [
        Column("step", .int64), Column("tokens", .int64), Column("epoch", .float64), Column("loss", .float64),
        Column("ce", .float64), Column("aux", .float64), Column("z", .float64), Column("lr", .float64),
        Column("grad_norm", .float64), Column("tokens_per_sec", .float64), Column("step_time", .float64),
        Column("nan_events", .int64),
    ]
    static let evalColumns: [Column] = [
        Column("step", .int64), Column("tokens", .int64), Column("epoch", .float64), Column("loss", .float64),
        Column("ppl", .float64), Column("scored", .int64),
    ]
    /// Trailing shape: `.iterations` is `[R]`, `.iterationsByExperts` `[R, E]`, `.routersByExperts` `[Q, E]`,
    /// `.iterationPairs` `[R − 1]`.
    static func expertColumns(biasRouters Q: Int = 0, agreement: Bool = false) -> [Column] {
        var columns = [
            Column("step", .int64), Column("counts", .int64, .iterationsByExperts), Column("dropped", .int64, .iterations),
            Column("prob_mean", .float32, .iterationsByExperts), Column("entropy", .float64, .iterations),
            Column("max_load", .float64, .iterations), Column("min_load", .float64, .iterations),
        ]
        if Q > 0 { columns.append(Column("bias", .float32, .routersByExperts)) }
        if agreement { columns.append(Column("agreement", .float64, .iterationPairs)) }
        return columns
    }

    private static func createLayout(_ f: H5File, configJSON: String, R: Int, E: Int, Q: Int = 0,
                                     expertColumns: [Column] = expertColumns()) throws {
        try f.setAttribute("format", format)
        try f.setAttribute("version", version)
        try f.setCheckedAttribute("config", configJSON)
        var groups: [(String, [Column])] = [("train", trainColumns), ("eval", evalColumns)]
        if E > 0 { groups.append(("experts", expertColumns)) }
        for (group, columns) in groups {
            try f.createGroup(group)
            for c in columns {
                let trailing = c.trailing.shape(R: R, E: E, Q: Q)
                let rowBytes = trailing.reduce(1, *) * c.type.byteSize
                let chunkRows = max(1, min(1024, 65536 / rowBytes))
                let shape = [0] + trailing, chunks = [chunkRows] + trailing
                let p = "\(group)/\(c.name)"
                // Fletcher-32 per chunk, as in checkpoints: a flipped bit in a value is refused when read
                // (exit status 3), never plotted or compared as if it were the run's.
                switch c.type {
                case .int64: try f.createDataset(p, of: Int64.self, shape: shape, chunks: chunks, extendable: true,
                                             fletcher32: true)
                case .float64: try f.createDataset(p, of: Double.self, shape: shape, chunks: chunks, extendable: true,
                                             fletcher32: true)
                case .float32: try f.createDataset(p, of: Float.self, shape: shape, chunks: chunks, extendable: true,
                                             fletcher32: true)
                case .int32: try f.createDataset(p, of: Int32.self, shape: shape, chunks: chunks, extendable: true,
                                             fletcher32: true)
                }
            }
        }
    }
}

/// A configuration value as JSON: number, string, bool or null.
public enum JSONScalar: Equatable, Codable, Sendable, CustomStringConvertible {
    case int(Int), double(Double), bool(Bool), string(String), null

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else { self = .string(try c.decode(String.self)) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .int(let v): try c.encode(v)
        case .double(let v): try c.encode(v)
        case .bool(let v): try c.encode(v)
        case .string(let v): try c.encode(v)
        case .null: try c.encodeNil()
        }
    }

    public var description: String {
        switch self {
        case .int(let v): return String(v)
        case .double(let v): return String(v)
        case .bool(let v): return String(v)
        case .string(let v): return v
        case .null: return "null"
        }
    }
}

// MARK: - Columns of one group

/// One dataset of a group: its name, element type and the shape of one row.
struct Column {
    enum Trailing {
        case none, iterations, iterationsByExperts, routersByExperts, iterationPairs
        func shape(R: Int, E: Int, Q: Int = 0) -> [Int] {
            switch self {
            case .none: return []
            case .iterations: return [R]
            case .iterationsByExperts: return [R, E]
            case .routersByExperts: return [Q, E]
            case .iterationPairs: return [max(R - 1, 0)]
            }
        }
    }
    var name: String
    var type: H5ElementType
    var trailing: Trailing
    init(_ name: String, _ type: H5ElementType, _ trailing: Trailing = .none) {
        self.name = name; self.type = type; self.trailing = trailing
    }
}

/// Values of one column for one appended row.
enum ColumnValues {
    case int64([Int64]), float64([Double]), float32([Float])
}

/// The open datasets of one group, all of the same length, with a strictly increasing `step`.
final class ColumnGroup {
    let name: String
    let path: String
    private let datasets: [(String, H5Dataset)]
    private(set) var rows: Int
    private(set) var lastStep: Int64?

    init(open f: H5File, name: String, columns: [Column], path: String) throws {
        self.name = name; self.path = path
        guard try f.exists(name) else {
            throw MetricsHistoryError(path: path, message: "the /\(name) group is missing")
        }
        var sets: [(String, H5Dataset)] = []
        for c in columns {
            guard try f.isDataset("\(name)/\(c.name)") else {
                throw MetricsHistoryError(path: path, message: "the dataset /\(name)/\(c.name) is missing")
            }
            sets.append((c.name, try f.openDataset("\(name)/\(c.name)")))
        }
        datasets = sets
        // A crash between the resizes of one append can leave unequal lengths: cut to the shortest.
        let lengths = try sets.map { try $0.1.shape().first ?? 0 }
        rows = lengths.min() ?? 0
        for (i, n) in lengths.enumerated() where n != rows { try sets[i].1.resize(rows: rows) }
        lastStep = rows > 0 ? try dataset("step").readRows(rows - 1 ..< rows, as: Int64.self)[0] : nil
    }

    func dataset(_ column: String) throws -> H5Dataset {
        guard let d = datasets.first(where: { $0.0 == column }) else {
            throw MetricsHistoryError(path: path, message: "no column \(column) in /\(name)")
        }
        return d.1
    }

    func requireAfter(_ step: Int64) throws {
        if let last = lastStep, step <= last {
            throw MetricsHistoryError(path: path, message: "/\(name) step \(step) is not after the last recorded step "
                                      + "\(last); steps must strictly increase (a resumed run truncates first)")
        }
    }

    /// Appends one row: every column grows by one, then the values are written.
    func append(_ values: [String: ColumnValues], step: Int64) throws {
        precondition(values.count == datasets.count, "one value per column of /\(name)")
        for (column, ds) in datasets {
            switch values[column]! {
            case .int64(let v): try ds.appendRows(v)
            case .float64(let v): try ds.appendRows(v)
            case .float32(let v): try ds.appendRows(v)
            }
            if column == "step" { KillPoint.historyColumn.reached() }
        }
        rows += 1
        lastStep = step
    }

    /// Keeps the rows with step <= `step` (a prefix, since steps increase).
    func truncate(afterStep step: Int64) throws {
        let steps = try dataset("step").read(as: Int64.self)
        let keep = steps.firstIndex(where: { $0 > step }) ?? steps.count
        if keep == rows { return }
        for (_, ds) in datasets { try ds.resize(rows: keep) }
        rows = keep
        lastStep = keep > 0 ? steps[keep - 1] : nil
    }
}

// Checkpoint files (SPEC section 6): one HDF5 file per checkpoint, whatever the
// world size, loadable at any world size.
//
//   root attributes  format "moe-dist/checkpoint", version 1, step, tokens, world_size, config (JSON),
//                    tokenizer_fingerprint (int64 holding the uint64 fingerprint's bits, SPEC section 8;
//                    0 = unknown; absent in checkpoints written before it existed)
//   /params/<path>, /optim/exp_avg/<path>, /optim/exp_avg_sq/<path>   float32, global shapes
//   /state           attributes: updates, nan_events, loader (JSON of the data loader position)
//
// Every dataset is chunked with HDF5's Fletcher-32 checksum (expert tensors one
// expert per chunk), so `verify` detects damaged contents.
//
// Writing takes turns instead of gathering: rank 0 creates the file under a
// temporary name with the trunk tensors and empty expert datasets; then each rank
// of the first expert group in turn opens it and writes the rows of its own
// experts; then rank 0 renames it to its final name. Serial HDF5 allows one
// writer at a time, and no rank ever holds more than its own experts (a gather to
// rank 0 would need all experts' parameters and moments there: ~1 GB for the
// seed reference). The cost is G sequential open/close turns.
import Foundation
import Configuration
import Collectives
import HDF5
import Model
import Kernels
import DataPipeline

public struct CheckpointState: Sendable {
    public var config: RunConfig
    public var counters: TrainerCounters
    public var loaderJSON: String
    public var worldSize: Int
    /// SPEC section 8: the tokenizer fingerprint of the run's data (0 = unknown or absent).
    public var tokenizerFingerprint: UInt64 = 0
}

/// A checkpoint path that names no file (a usage error, exit status 2).
public struct CheckpointMissingError: Error, CustomStringConvertible {
    public var path: String
    public var description: String { "checkpoint \(path): no such file" }
}

public enum Checkpoint {
    public static let format = "moe-dist/checkpoint"
    public static let version: Int64 = 1

    /// `RUN_DIR/checkpoints/step-<8 digits>.h5`
    public static func path(runDirectory: String, step: Int) -> String {
        runDirectory + "/checkpoints/" + String(format: "step-%08d.h5", step)
    }

    /// The metrics history as it was when checkpoint `path` was written (`checkpoints/.step-N.h5.metrics`,
    /// hidden and not ending in .h5). It is complete before the checkpoint gets its final name, and a
    /// resume from that checkpoint restores it as RUN_DIR/metrics.h5.
    public static func historySnapshotPath(_ path: String) -> String {
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { String(path[...$0]) } ?? ""
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        return dir + "." + name + ".metrics"
    }

    /// The temporary name a checkpoint has while it is written (hidden, not ending in .h5).
    static func partialPath(_ path: String) -> String {
        let url = URL(fileURLWithPath: path)
        return url.deletingLastPathComponent().appendingPathComponent("." + url.lastPathComponent + ".partial").path
    }

    // MARK: write

    /// Writes a checkpoint of `trainer` to `path` (collective: every rank calls it).
    /// `tokenizerFingerprint`: the data's (SPEC section 8), stored as the root attribute `tokenizer_fingerprint`.
    public static func save(_ trainer: Trainer, to path: String, tokenizerFingerprint: UInt64 = 0) throws {
        let ctx = trainer.ctx, world = ctx.world, store = trainer.model.store
        let partial = partialPath(path)
        // Turn 0: rank 0 creates the file with the trunk and the empty expert datasets.
        var failure: Error? = nil
        if world.rank == 0 {
            do { try createPartial(partial, for: path, trainer, tokenizerFingerprint: tokenizerFingerprint) } catch { failure = error }
        }
        try agree(world, failure, partial)
        KillPoint.checkpointPartial.reached()
        // Turns 1 ... G: the ranks of the first expert group write their experts' rows.
        let writers = store.infos.contains { $0.isExpert } ? ctx.expertGroup.size : 0
        for turn in 0 ..< writers {
            if world.rank == turn {
                do { try writeExpertRows(partial, store) } catch { failure = error }
            }
            try agree(world, failure, partial)
        }
        // Last turn: rank 0 makes it durable and gives it its final name.
        if world.rank == 0 {
            KillPoint.beforeRename.reached()
            do { try publish(partial, as: path) } catch { failure = error }
        }
        try agree(world, failure, partial)
        KillPoint.afterRename.reached()
    }

    /// Creates `partial` with the attributes, the trunk's datasets and the empty expert datasets (rank 0).
    private static func createPartial(_ partial: String, for path: String, _ trainer: Trainer,
                                      tokenizerFingerprint: UInt64) throws {
        HDF5Library.lock.lock()
        defer { HDF5Library.lock.unlock() }
        try FileManager.default.createDirectory(atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path,
                                                withIntermediateDirectories: true)
        unlink(partial)
        let f = try H5File.create(path: partial, metadataChecksums: true)   // attributes are checksummed too
        defer { f.close() }
        try f.setAttribute("format", format)
        try f.setAttribute("version", version)
        try f.setAttribute("step", Int64(trainer.counters.step))
        try f.setAttribute("tokens", Int64(trainer.counters.tokens))
        try f.setAttribute("world_size", Int64(trainer.ctx.world.size))
        try f.setCheckedAttribute("config", trainer.config.toJSON())
        if let blas = BlasKernelSelection.current {   // which kernels produced these numbers
            try f.setAttribute("blas_kernels", blas.inUse)
            try f.setAttribute("blas_kernels_reason", blas.reason)
        }
        try f.setAttribute("tokenizer_fingerprint", Int64(bitPattern: tokenizerFingerprint))
        let state = try f.createGroup("state")
        try state.setAttribute("updates", Int64(trainer.counters.updates))
        try state.setAttribute("nan_events", Int64(trainer.counters.nanEvents))
        try state.setCheckedAttribute("loader", String(decoding: try JSONEncoder().encode(trainer.loader.state), as: UTF8.self))
        let store = trainer.model.store
        for p in store.infos {
            for (prefix, base) in sections(store) {
                let name = prefix + p.path
                if p.isExpert {
                    try f.createDataset(name, of: Float.self, shape: p.shape, chunks: [1] + p.shape.dropFirst(),
                                        fletcher32: true)
                } else {
                    try f.createDataset(name, values: Array(UnsafeBufferPointer(start: base + p.offset, count: p.count)),
                                        shape: p.shape, chunks: defaultChunks(p.shape), fletcher32: true)
                }
            }
        }
        try writeBuffers(f, trainer.model)
        try f.flush()
    }

    /// Writes this rank's rows of every expert dataset into `partial` (its turn).
    private static func writeExpertRows(_ partial: String, _ store: ParameterStore) throws {
        HDF5Library.lock.lock()
        defer { HDF5Library.lock.unlock() }
        let f = try H5File.open(path: partial, readOnly: false)
        defer { f.close() }
        for p in store.infos where p.isExpert && p.count > 0 {
            for (prefix, base) in sections(store) {
                let ds = try f.openDataset(prefix + p.path)
                try ds.writeRows(Array(UnsafeBufferPointer(start: base + p.offset, count: p.count)),
                                 at: p.localRows.lowerBound)
            }
        }
        try f.flush()
    }

    /// fsyncs `partial`, renames it to `path` and fsyncs the directory, so the name appears only for a complete file.
    private static func publish(_ partial: String, as path: String) throws {
        let fd = open(partial, O_RDONLY)
        if fd >= 0 { fsync(fd); close(fd) }
        if rename(partial, path) != 0 {
            throw TrainingError("checkpoint \(path): rename failed: \(String(cString: strerror(errno)))")
        }
        let dir = open(URL(fileURLWithPath: path).deletingLastPathComponent().path, O_RDONLY)
        if dir >= 0 { fsync(dir); close(dir) }
    }

    /// All ranks learn whether any rank failed; a failure removes the partial file and throws everywhere.
    private static func agree(_ world: Communicator, _ failure: Error?, _ partial: String) throws {
        if world.anyRank(failure != nil) {
            if world.rank == 0 { unlink(partial) }
            throw failure ?? TrainingError("checkpoint: another rank failed while writing \(partial)")
        }
    }

    private static func sections(_ s: ParameterStore) -> [(String, UnsafeMutablePointer<Float>)] {
        [("params/", s.params), ("optim/exp_avg/", s.expAvg), ("optim/exp_avg_sq/", s.expAvgSq)]
    }

    /// About 1 MiB chunks along the first axis.
    private static func defaultChunks(_ shape: [Int]) -> [Int] {
        let row = max(shape.dropFirst().reduce(1, *), 1)
        return [max(1, min(shape[0], (1 << 18) / row))] + shape.dropFirst()
    }

    // MARK: read

    /// Reads the root attributes and state (no tensors).
    public static func readState(_ path: String) throws -> CheckpointState {
        try reading(path) { try readStateUnchecked(path) }
    }

    private static func readStateUnchecked(_ path: String) throws -> CheckpointState {
        let f = try openCheckpoint(path)
        defer { f.close() }
        let config: RunConfig
        do { config = try RunConfig.fromJSON(f.checkedStringAttribute("config")) } catch {
            throw DataError("checkpoint \(path): its stored configuration cannot be read: \(oneLine(error))")
        }
        var c = TrainerCounters()
        c.step = Int(try f.int64Attribute("step"))
        c.tokens = Int(try f.int64Attribute("tokens"))
        let state = try f.openGroup("state")
        c.updates = Int(try state.int64Attribute("updates"))
        c.nanEvents = Int(try state.int64Attribute("nan_events"))
        // Every checkpoint has it (SPEC section 8; 0 = the data's tokenizer is unknown): one without it has
        // lost it, and reading on would silently switch the tokenizer check off.
        let fingerprint = UInt64(bitPattern: try f.int64Attribute("tokenizer_fingerprint"))
        let worldSize = Int(try f.int64Attribute("world_size"))
        guard c.step >= 0, c.tokens >= 0, (0 ... c.step).contains(c.updates), (0 ... c.step).contains(c.nanEvents), worldSize >= 1 else {
            throw DataError("checkpoint \(path): impossible counters (step \(c.step), tokens \(c.tokens), updates \(c.updates), "
                            + "nan_events \(c.nanEvents), world_size \(worldSize))")
        }
        // The data loader's position counts the same steps and tokens (every step consumes its windows).
        let loaderJSON = try state.checkedStringAttribute("loader")
        guard let loader = try? JSONDecoder().decode(LoaderState.self, from: Data(loaderJSON.utf8)) else {
            throw DataError("checkpoint \(path): /state loader is not a data-loader position")
        }
        let (epochWindows, o1) = loader.epoch.multipliedReportingOverflow(by: loader.windowsPerEpoch)
        let (windows, o2) = epochWindows.addingReportingOverflow(loader.cursor)
        let (tokensSeen, o3) = windows.multipliedReportingOverflow(by: loader.seqLen)
        guard !(o1 || o2 || o3), loader.steps == c.step, tokensSeen == c.tokens else {
            throw DataError("checkpoint \(path): step \(c.step) and tokens \(c.tokens) disagree with the data loader's position "
                            + "(\(loader.steps) steps, \(o1 || o2 || o3 ? "an impossible number of" : "\(tokensSeen)") tokens)")
        }
        return CheckpointState(config: config, counters: c, loaderJSON: loaderJSON,
                               worldSize: worldSize, tokenizerFingerprint: fingerprint)
    }

    private static func openCheckpoint(_ path: String) throws -> H5File {
        guard FileManager.default.fileExists(atPath: path) else { throw CheckpointMissingError(path: path) }
        let f = try H5File.open(path: path, readOnly: true)
        let fmt = (try? f.stringAttribute("format")) ?? ""
        guard fmt == format else { f.close(); throw DataError("checkpoint \(path): not a moe-dist checkpoint (format \"\(fmt)\")") }
        let v = try f.int64Attribute("version")
        guard v == version else { f.close(); throw DataError("checkpoint \(path): version \(v), this moe-dist reads version \(version)") }
        return f
    }

    /// `/buffers/<path>`: the routers' selection biases (the same on every rank; rank 0 writes them).
    private static func writeBuffers(_ f: H5File, _ model: RecurrentMoEModel) throws {
        let E = model.config.moe.numExperts
        for (q, name) in ModelBuffers.routerBiasPaths(model.config).enumerated() {
            try f.createDataset("buffers/" + name, values: Array(UnsafeBufferPointer(start: model.selectionBias.pointer + q * E, count: E)),
                                shape: [E], chunks: [E], fletcher32: true)
        }
    }

    /// Reads the routers' selection biases into `model`; a checkpoint written without them (router_bias_rate
    /// was 0) leaves them at zero, their initial value.
    public static func loadBuffers(_ path: String, into model: RecurrentMoEModel) throws {
        HDF5Library.lock.lock()
        defer { HDF5Library.lock.unlock() }
        try reading(path) {
            let f = try openCheckpoint(path)
            defer { f.close() }
            try readBuffers(f, path, into: model)
        }
    }

    /// Runs a read of checkpoint `path`: whatever goes wrong reading it (an HDF5 error such as a failed
    /// Fletcher-32 checksum, a malformed attribute) is a damaged input, DataError (exit status 3), naming
    /// the file; a missing file, a refused configuration and errors already naming it pass unchanged.
    static func reading<T>(_ path: String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as CheckpointMissingError { throw e } catch let e as DataError { throw e }
        catch let e as ConfigError { throw e } catch {
            throw DataError("checkpoint \(path): damaged or not a moe-dist checkpoint: \(oneLine(error))")
        }
    }

    /// An error's description on one line (HDF5's error stack has several).
    static func oneLine(_ error: Error) -> String {
        "\(error)".split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: "; ")
    }

    private static func readBuffers(_ f: H5File, _ path: String, into model: RecurrentMoEModel) throws {
        let E = model.config.moe.numExperts
        for (q, name) in ModelBuffers.routerBiasPaths(model.config).enumerated() where try f.exists("buffers/" + name) {
            let values: [Float] = try tensor(f, path, "buffers/" + name, shape: [E]).read()
            guard values.count == E else { throw TrainingError("checkpoint \(path): /buffers/\(name) has \(values.count) values, expected \(E)") }
            values.withUnsafeBufferPointer { (model.selectionBias.pointer + q * E).update(from: $0.baseAddress!, count: E) }
        }
    }

    /// Opens tensor `name` of checkpoint `path` as moe-dist writes it: float32 of `shape` with the Fletcher-32
    /// filter. A tensor stored otherwise (retyped, or rewritten without its checksum) would be read with a
    /// silent conversion and no check of its contents, so it is damage (DataError), not data.
    private static func tensor(_ f: H5File, _ path: String, _ name: String, shape: [Int]) throws -> H5Dataset {
        guard try f.exists(name) else { throw DataError("checkpoint \(path): missing tensor /\(name)") }
        let ds = try f.openDataset(name)
        let have = try ds.shape()
        guard have == shape else { throw DataError("checkpoint \(path): /\(name) has shape \(have), the configuration needs \(shape)") }
        let type = try ds.elementType()
        guard type == .float32 else {
            throw DataError("checkpoint \(path): /\(name) is stored as \(type.map { "\($0)" } ?? "an unsupported type"), not float32")
        }
        guard try ds.hasFletcher32() else { throw DataError("checkpoint \(path): /\(name) has no Fletcher-32 checksum") }
        try ds.verifyChunkIndex()
        return ds
    }

    /// The routers' selection biases [Q·E] in ModelBuffers.routerBiasPaths order (zeros for a router whose
    /// bias was not written, its initial value).
    public static func readSelectionBias(_ path: String, config: RunConfig) throws -> [Float] {
        HDF5Library.lock.lock()
        defer { HDF5Library.lock.unlock() }
        let f = try openCheckpoint(path)
        defer { f.close() }
        let E = config.moe.numExperts, names = ModelBuffers.routerBiasPaths(config)
        var out = [Float](repeating: 0, count: names.count * max(E, 0))
        for (q, name) in names.enumerated() where try f.exists("buffers/" + name) {
            let values: [Float] = try f.read("buffers/" + name)
            guard values.count == E else { throw DataError("checkpoint \(path): /buffers/\(name) has \(values.count) values, expected \(E)") }
            out.replaceSubrange(q * E ..< (q + 1) * E, with: values)
        }
        return out
    }

    /// One whole parameter tensor, `/params/<tensor>` (all experts), with its shape.
    public static func readParameter(_ path: String, tensor: String) throws -> (shape: [Int], values: [Float]) {
        HDF5Library.lock.lock()
        defer { HDF5Library.lock.unlock() }
        let f = try openCheckpoint(path)
        defer { f.close() }
        let ds = try f.openDataset("params/" + tensor)
        try ds.verifyChunkIndex()
        return (try ds.shape(), try ds.read())
    }

    /// Loads only the parameters (not moments or state) into `store`, e.g. for evaluation or a gradient dump.
    public static func loadParameters(_ path: String, into store: ParameterStore) throws {
        HDF5Library.lock.lock()
        defer { HDF5Library.lock.unlock() }
        try reading(path) {
            let f = try openCheckpoint(path)
            defer { f.close() }
            try readTensors(f, path, into: store, sections: [("params/", store.params)])
        }
    }

    /// Reads each section's tensors into the store: the trunk whole, experts only the rows held here.
    private static func readTensors(_ f: H5File, _ path: String, into store: ParameterStore,
                                    sections: [(String, UnsafeMutablePointer<Float>)]) throws {
        for p in store.infos {
            for (prefix, base) in sections {
                let name = prefix + p.path
                let ds = try tensor(f, path, name, shape: p.shape)
                let values: [Float] = p.isExpert ? try ds.readRows(p.localRows) : try ds.read()
                guard values.count == p.count else {
                    throw DataError("checkpoint \(path): /\(name) read \(values.count) values, expected \(p.count)")
                }
                values.withUnsafeBufferPointer { (base + p.offset).update(from: $0.baseAddress!, count: p.count) }
            }
        }
    }

    /// Per tensor of a checkpoint: path, shape and the L2 norm of the parameters.
    public static func tensorSummaries(_ path: String) throws -> [(path: String, shape: [Int], norm: Double)] {
        HDF5Library.lock.lock()
        defer { HDF5Library.lock.unlock() }
        return try reading(path) {
            let config = try readState(path).config
            let f = try openCheckpoint(path)
            defer { f.close() }
            return try ModelTensors.list(config).map { t in
                let values: [Float] = try tensor(f, path, "params/" + t.path, shape: t.shape).read()
                return (t.path, t.shape, values.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot())
            }
        }
    }

    /// Loads parameters, moments, counters and the loader position into `trainer` (collective-free:
    /// each rank reads the trunk and only the expert rows it owns). Refuses a checkpoint whose
    /// architecture differs from the trainer's, naming the keys.
    public static func load(_ path: String, into trainer: Trainer) throws {
        HDF5Library.lock.lock()
        defer { HDF5Library.lock.unlock() }
        try reading(path) { try loadLocked(path, into: trainer) }
    }

    private static func loadLocked(_ path: String, into trainer: Trainer) throws {
        let st = try readState(path)
        let diffs = trainer.config.architectureDifferences(from: st.config)
        if !diffs.isEmpty {
            throw ConfigError(key: nil, "checkpoint \(path): architecture differs from the configuration in \(diffs.joined(separator: ", ")); "
                                + "resume with the checkpoint's values or start a new run")
        }
        let f = try openCheckpoint(path)
        defer { f.close() }
        try readTensors(f, path, into: trainer.model.store, sections: sections(trainer.model.store))
        try readBuffers(f, path, into: trainer.model)
        trainer.counters = st.counters
        try trainer.loader.restore(JSONDecoder().decode(LoaderState.self, from: Data(st.loaderJSON.utf8)))
    }

    /// Checks a checkpoint end to end: format, version, attributes, config, and every tensor read back
    /// through its Fletcher-32 checksums with the shapes its config implies. Throws what is wrong.
    public static func verify(_ path: String) throws {
        HDF5Library.lock.lock()
        defer { HDF5Library.lock.unlock() }
        let st = try readState(path)
        var config = st.config
        if config.model.vocabSize == 0 { throw DataError("checkpoint \(path): config has no vocabulary size") }
        config.moe.numExperts = max(config.moe.numExperts, 0)
        let f = try openCheckpoint(path)
        defer { f.close() }
        for t in ModelTensors.list(config) {
            for prefix in ["params/", "optim/exp_avg/", "optim/exp_avg_sq/"] {
                let name = prefix + t.path
                let ds = try tensor(f, path, name, shape: t.shape)
                let values: [Float] = try ds.read()       // Fletcher-32 failures throw here
                if prefix == "params/", let bad = values.firstIndex(where: { !$0.isFinite }) {
                    throw DataError("checkpoint \(path): /\(name) holds a non-finite value at \(bad)")
                }
            }
        }
        for name in ModelBuffers.routerBiasPaths(config) where try f.exists("buffers/" + name) {
            let values: [Float] = try tensor(f, path, "buffers/" + name, shape: [config.moe.numExperts]).read()
            guard values.count == config.moe.numExperts, values.allSatisfy(\.isFinite) else {
                throw TrainingError("checkpoint \(path): /buffers/\(name) has the wrong size or a non-finite value")
            }
        }
    }

    /// Checkpoints of a run directory, newest first.
    public static func list(runDirectory: String) -> [String] {
        let dir = runDirectory + "/checkpoints"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        return names.filter { $0.hasPrefix("step-") && $0.hasSuffix(".h5") }.sorted(by: >).map { dir + "/" + $0 }
    }

    /// Removes all but the newest `keep` checkpoints, and the history snapshots of checkpoints that are
    /// gone (rank 0 only, after a save: the newest checkpoint's snapshot is always kept).
    public static func prune(runDirectory: String, keep: Int) {
        let all = list(runDirectory: runDirectory)
        for old in all.dropFirst(keep) { try? FileManager.default.removeItem(atPath: old) }
        let kept = Set(all.prefix(keep).map { historySnapshotPath($0) })
        let dir = runDirectory + "/checkpoints"
        for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
        where name.hasPrefix(".step-") && name.hasSuffix(".h5.metrics") && !kept.contains(dir + "/" + name) {
            try? FileManager.default.removeItem(atPath: dir + "/" + name)
        }
    }
}

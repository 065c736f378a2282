// MetricsHistory against SPEC section 7, with h5py as the independent reader:
// names, shapes, dtypes, attributes; truncation on resume; strictly increasing
// steps; load-balance statistics against a hand computation; reading while open.
import Foundation
import HDF5
import XCTest
import TestSupport
@testable import Training

final class MetricsHistoryTests: XCTestCase {
    private let R = 2, E = 3
    private let config = #"{"model":{"depth":2},"moe":{"num_experts":3}}"#

    private func trainRow(_ step: Int64) -> TrainRow {
        TrainRow(step: step, tokens: step * 100, epoch: Double(step) / 50, loss: 5 - Double(step) / 10, ce: 4.9,
                 aux: 1.01, z: 0.5, lr: 3e-4, gradNorm: 0.75, tokensPerSec: 1234.5, stepTime: 0.25, nanEvents: step / 20)
    }
    private func evalRow(_ step: Int64) -> EvalRow {
        EvalRow(step: step, tokens: step * 100, epoch: Double(step) / 50, loss: 4.5, ppl: exp(4.5), scored: 13298)
    }
    private func expertRow(_ step: Int64) -> ExpertRow {
        ExpertRow(step: step, counts: [6, 3, 3, Int64(step), 0, 0], dropped: [1, Int64(step)],
                  probMean: [0.5, 0.25, 0.25, 0.8, 0.1, 0.1])
    }
    private func tempPath(_ name: String = "metrics.h5") throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moe-metrics-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir + "/" + name
    }

    func testLayoutMatchesSpecAsSeenByH5py() throws {
        let path = try tempPath()
        let h = try MetricsHistory(path: path, configJSON: config, iterations: R, numExperts: E)
        for s in [10, 20, 30] as [Int64] { try h.append(trainRow(s)); try h.append(expertRow(s)) }
        try h.append(evalRow(20))
        h.close()

        let out = try Python.run("""
        import h5py, sys, json
        f = h5py.File(sys.argv[1], 'r')
        d = {'attrs': {k: (v if isinstance(v, str) else int(v)) for k, v in f.attrs.items()},
             'attr_types': {k: type(v).__name__ for k, v in f.attrs.items()}, 'groups': sorted(f.keys())}
        for g in f.keys():
            for n, ds in f[g].items():
                d['/%s/%s' % (g, n)] = [list(ds.shape), ds.dtype.name, ds.chunks is not None, ds.maxshape[0] is None,
                                   ds.fletcher32]
        print(json.dumps(d))
        """, [path])
        let d = try JSONSerialization.jsonObject(with: Data(out.utf8)) as! [String: Any]
        XCTAssertEqual(d["groups"] as? [String], ["eval", "experts", "train"])
        let attrs = d["attrs"] as! [String: Any]
        XCTAssertEqual(attrs["format"] as? String, "moe-dist/metrics")
        XCTAssertEqual(attrs["version"] as? Int, 1)
        XCTAssertEqual(attrs["config"] as? String, config)
        XCTAssertEqual((d["attr_types"] as! [String: String])["config"], "str")
        XCTAssertEqual(attrs["config_crc32"] as? Int, Int(CRC32.checksum(config.utf8)))
        var expected: [String: [Any]] = [:]
        for n in ["step", "tokens", "nan_events"] { expected["/train/" + n] = [[3], "int64"] }
        for n in ["epoch", "loss", "ce", "aux", "z", "lr", "grad_norm", "tokens_per_sec", "step_time"] {
            expected["/train/" + n] = [[3], "float64"]
        }
        for n in ["step", "tokens", "scored"] { expected["/eval/" + n] = [[1], "int64"] }
        for n in ["epoch", "loss", "ppl"] { expected["/eval/" + n] = [[1], "float64"] }
        expected["/experts/step"] = [[3], "int64"]
        expected["/experts/counts"] = [[3, R, E], "int64"]
        expected["/experts/dropped"] = [[3, R], "int64"]
        expected["/experts/prob_mean"] = [[3, R, E], "float32"]
        for n in ["entropy", "max_load", "min_load"] { expected["/experts/" + n] = [[3, R], "float64"] }
        let datasets = d.keys.filter { $0.hasPrefix("/") }
        XCTAssertEqual(Set(datasets), Set(expected.keys), "exactly the datasets of SPEC section 7")
        for (name, want) in expected {
            let got = d[name] as? [Any] ?? []
            XCTAssertEqual(got.first as? [Int], want[0] as? [Int], "shape of \(name)")
            XCTAssertEqual(got.count > 1 ? got[1] as? String : nil, want[1] as? String, "dtype of \(name)")
            XCTAssertEqual(got.count > 3 ? got[2] as? Bool : nil, true, "\(name) is chunked")
            XCTAssertEqual(got.count > 3 ? got[3] as? Bool : nil, true, "\(name) is extendable along its first axis")
            XCTAssertEqual(got.count > 4 ? got[4] as? Bool : nil, true, "\(name) has a Fletcher-32 checksum per chunk")
        }

        // Values, read back through h5py.
        let values = try Python.run("""
        import h5py, sys
        f = h5py.File(sys.argv[1], 'r')
        print(list(map(int, f['train/step'][:])), list(map(float, f['train/loss'][:])), list(map(int, f['train/nan_events'][:])))
        print(f['experts/counts'][2].tolist(), f['experts/dropped'][2].tolist(), f['experts/prob_mean'][0].tolist())
        print(int(f['eval/scored'][0]), float(f['eval/ppl'][0]))
        """, [path]).split(separator: "\n").map(String.init)
        XCTAssertEqual(values[0], "[10, 20, 30] [4.0, 3.0, 2.0] [0, 1, 1]")
        XCTAssertEqual(values[1], "[[6, 3, 3], [30, 0, 0]] [1, 30] [[0.5, 0.25, 0.25], [0.800000011920929, 0.10000000149011612, 0.10000000149011612]]")
        XCTAssertEqual(values[2], "13298 \(exp(4.5))")
    }

    /// A flipped bit in a stored value fails the chunk's Fletcher-32 checksum: reading refuses the file
    /// (naming it) where it would otherwise return a wrong loss. h5py, the notebooks' reader, refuses it too.
    func testAFlippedValueBitIsRefusedNotRead() throws {
        let path = try tempPath()
        let h = try MetricsHistory(path: path, configJSON: config, iterations: R, numExperts: E)
        var row = trainRow(10)
        row.loss = 1234.5678125                       // a value whose 8 bytes occur once in the file
        try h.append(row)
        try h.append(expertRow(10))
        h.close()
        XCTAssertEqual(try RunMetrics.read(path).trainLoss, [1234.5678125])

        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let pattern = withUnsafeBytes(of: (1234.5678125 as Double).bitPattern.littleEndian, Array.init)
        let at = (0...(bytes.count - 8)).filter { Array(bytes[$0..<$0 + 8]) == pattern }
        XCTAssertEqual(at.count, 1, "the loss is stored once, uncompressed")
        bytes[at[0]] ^= 0x01                          // 1234.5678125 -> 1234.567812499..., a plausible loss
        try Data(bytes).write(to: URL(fileURLWithPath: path))

        XCTAssertThrowsError(try RunMetrics.read(path)) { error in
            XCTAssertTrue(error is MetricsHistoryError, "\(error)")
            XCTAssertTrue("\(error)".contains(path), "names the file: \(error)")
        }
        let h5py = try Python.run("""
        import h5py, sys
        try:
            h5py.File(sys.argv[1], 'r')['train/loss'][:]
            print('read')
        except OSError:
            print('refused')
        """, [path])
        XCTAssertEqual(h5py.trimmingCharacters(in: .whitespacesAndNewlines), "refused")
    }

    /// The config attribute (what `compare` and notebooks read when config.yaml is gone) is a variable-length
    /// string in HDF5's global heap, which no HDF5 format checksums (fuzz seed metrics 568 changed two of its
    /// bytes, and the other value was read). Its CRC-32 in `config_crc32` catches that. HDF5 may leave a
    /// stale copy of a rewritten value in the file, so each copy is changed in turn: the changed value is
    /// never read, and changing the live copy is refused, by moe-dist and by a CRC check in Python.
    func testAChangedConfigByteIsRefusedNotRead() throws {
        let path = try tempPath()
        let json = #"{"train": {"eval_interval": 3}}"#
        let h = try MetricsHistory(path: path, configJSON: json, iterations: R, numExperts: E)
        try h.append(trainRow(10))
        h.close()
        XCTAssertEqual(try RunMetrics.read(path).configJSON, json)

        let intact = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let pattern = Array(#""eval_interval": 3"#.utf8)
        let copies = (0...(intact.count - pattern.count)).filter { Array(intact[$0..<$0 + pattern.count]) == pattern }
        XCTAssertFalse(copies.isEmpty, "the config is stored uncompressed")
        var refusedByMoeDist = 0, refusedInPython = 0
        for at in copies {
            var bytes = intact
            bytes[at + pattern.count - 1] = UInt8(ascii: "7")     // eval_interval 3 -> 7, still valid JSON
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            do {
                let read = try RunMetrics.read(path).configJSON
                XCTAssertEqual(read, json, "a changed config was read (byte \(at))")
            } catch {
                XCTAssertTrue("\(error)".contains(path) && "\(error)".contains("CRC-32"), "names the file and why: \(error)")
                refusedByMoeDist += 1
            }
            let python = try Python.run("""
            import h5py, sys, zlib
            a = h5py.File(sys.argv[1], 'r').attrs
            print('read' if zlib.crc32(a['config'].encode()) == a['config_crc32'] else 'refused', a['config'])
            """, [path]).trimmingCharacters(in: .whitespacesAndNewlines)
            if python.hasPrefix("refused") { refusedInPython += 1 } else { XCTAssertEqual(python, "read \(json)", "byte \(at)") }
        }
        XCTAssertEqual(refusedByMoeDist, 1, "the live copy, changed, is refused")
        XCTAssertEqual(refusedInPython, 1, "Python's CRC check refuses the live copy, changed")
    }

    func testDenseRunHasNoExpertsGroup() throws {
        let path = try tempPath()
        let h = try MetricsHistory(path: path, configJSON: "{}", iterations: 4, numExperts: 0)
        try h.append(trainRow(1))
        XCTAssertThrowsError(try h.append(expertRow(1)))
        h.close()
        let f = try H5File.open(path: path)
        XCTAssertEqual(try f.memberNames(), ["eval", "train"])
        // Reopening with experts, or with other R/E, is refused with a message naming the file.
        f.close()
        XCTAssertThrowsError(try MetricsHistory(path: path, configJSON: "{}", iterations: 4, numExperts: 8)) {
            XCTAssertTrue("\($0)".contains(path) && "\($0)".contains("experts"), "\($0)")
        }
    }

    func testReopenChecksFormatAndShape() throws {
        let path = try tempPath()
        do {
            let h = try MetricsHistory(path: path, configJSON: config, iterations: R, numExperts: E)
            try h.append(trainRow(5))
        }
        XCTAssertThrowsError(try MetricsHistory(path: path, configJSON: config, iterations: R + 1, numExperts: E)) {
            XCTAssertTrue("\($0)".contains(path) && "\($0)".contains("R = 3"), "\($0)")
        }
        XCTAssertThrowsError(try MetricsHistory(path: path, configJSON: config, iterations: R, numExperts: E + 1))
        let other = try tempPath("other.h5")
        try AtomicFile.write(to: other) { try $0.setAttribute("format", "moe-dist/checkpoint") }
        XCTAssertThrowsError(try MetricsHistory(path: other, configJSON: config, iterations: R, numExperts: E)) {
            XCTAssertTrue("\($0)".contains(other) && "\($0)".contains("moe-dist/checkpoint"), "\($0)")
        }
        let junk = try tempPath("junk.h5")
        try "junk".write(toFile: junk, atomically: false, encoding: .utf8)
        XCTAssertThrowsError(try MetricsHistory(path: junk, configJSON: config, iterations: R, numExperts: E)) {
            XCTAssertTrue("\($0)".contains(junk), "\($0)")
        }
        // Reopening continues where the file ended, and records the new config.
        let h = try MetricsHistory(path: path, configJSON: #"{"resumed":true}"#, iterations: R, numExperts: E)
        XCTAssertEqual(h.lastTrainStep, 5)
        XCTAssertThrowsError(try h.append(trainRow(5)))
        try h.append(trainRow(6))
        h.close()
        XCTAssertEqual(try H5File.open(path: path).stringAttribute("config"), #"{"resumed":true}"#)
    }

    func testReopenRepairsAHalfWrittenAppend() throws {
        let path = try tempPath()
        do {
            let h = try MetricsHistory(path: path, configJSON: config, iterations: R, numExperts: E)
            for s in [1, 2, 3] as [Int64] { try h.append(trainRow(s)); try h.append(expertRow(s)) }
        }
        do {   // a crash in the middle of appending step 4: only some datasets grew
            let f = try H5File.open(path: path, readOnly: false)
            try f.openDataset("train/step").appendRows([Int64(4)])
            try f.openDataset("train/loss").appendRows([0.5])
            try f.openDataset("experts/counts").appendRows([Int64](repeating: 1, count: R * E))
        }
        let h = try MetricsHistory(path: path, configJSON: config, iterations: R, numExperts: E)
        XCTAssertEqual([h.trainCount, h.expertCount], [3, 3])
        XCTAssertEqual(h.lastTrainStep, 3)
        try h.append(trainRow(4))
        h.close()
        let f = try H5File.open(path: path)
        XCTAssertEqual(try f.read("train/step", as: Int64.self), [1, 2, 3, 4])
        XCTAssertEqual(try f.read("train/loss", as: Double.self), [4.9, 4.8, 4.7, 4.6])
        XCTAssertEqual(try f.openDataset("experts/counts").shape(), [3, R, E])
    }

    func testStepsMustStrictlyIncrease() throws {
        let h = try MetricsHistory(path: try tempPath(), configJSON: config, iterations: R, numExperts: E)
        try h.append(trainRow(10))
        XCTAssertThrowsError(try h.append(trainRow(10))) { XCTAssertTrue("\($0)".contains("strictly increase"), "\($0)") }
        XCTAssertThrowsError(try h.append(trainRow(9)))
        try h.append(evalRow(10))
        XCTAssertThrowsError(try h.append(evalRow(10)))
        try h.append(expertRow(10))
        XCTAssertThrowsError(try h.append(expertRow(3)))
        try h.append(trainRow(11))
        XCTAssertEqual([h.trainCount, h.evalCount, h.expertCount], [2, 1, 1])
        // Rows of the wrong size are refused.
        XCTAssertThrowsError(try h.append(ExpertRow(step: 20, counts: [1, 2], dropped: [0, 0], probMean: [Float](repeating: 0, count: 6))))
        XCTAssertEqual(h.expertCount, 1)
    }

    func testTruncateKeepsStepsUpToKInEveryGroupAndAppendsContinue() throws {
        let path = try tempPath()
        let h = try MetricsHistory(path: path, configJSON: config, iterations: R, numExperts: E)
        for s in stride(from: 10, through: 100, by: 10).map(Int64.init) {
            try h.append(trainRow(s)); try h.append(expertRow(s))
            if s % 30 == 0 { try h.append(evalRow(s)) }
        }
        try h.truncate(afterStep: 55)
        XCTAssertEqual([h.trainCount, h.evalCount, h.expertCount], [5, 1, 5])
        XCTAssertEqual([h.lastTrainStep, h.lastEvalStep, h.lastExpertStep], [50, 30, 50])
        try h.append(trainRow(60)); try h.append(expertRow(60)); try h.append(evalRow(60))
        try h.truncate(afterStep: 1000)   // nothing to cut
        h.close()

        // A resumed run (new object) cuts back again.
        let h2 = try MetricsHistory(path: path, configJSON: config, iterations: R, numExperts: E)
        try h2.truncate(afterStep: 20)
        try h2.append(trainRow(30))
        h2.close()

        let f = try H5File.open(path: path)
        XCTAssertEqual(try f.read("train/step", as: Int64.self), [10, 20, 30])
        XCTAssertEqual(try f.read("train/loss", as: Double.self), [4, 3, 2])
        XCTAssertEqual(try f.read("eval/step", as: Int64.self), [])
        XCTAssertEqual(try f.read("experts/step", as: Int64.self), [10, 20])
        for g in ["train", "eval", "experts"] {
            let group = try f.openGroup(g)
            let n = try group.openDataset("step").shape()[0]
            for m in try group.memberNames() {
                XCTAssertEqual(try group.openDataset(m).shape()[0], n, "/\(g)/\(m) has the group's length")
            }
        }
        XCTAssertEqual(try f.openDataset("experts/counts").shape(), [2, R, E])
    }

    func testLoadStatisticsMatchHandComputation() throws {
        // Iteration 0: counts 6, 3, 3 of 12 -> l = 1/2, 1/4, 1/4.
        //   entropy = −(½ ln ½ + 2·¼ ln ¼) / ln 3 = (½ ln 2 + ln 2) / ln 3 = 1.5 ln 2 / ln 3
        //   max_load = 3 · ½ = 1.5, min_load = 3 · ¼ = 0.75.
        // Iteration 1: counts 7, 0, 0 -> l = 1, 0, 0: entropy 0, max 3, min 0.
        // Iteration 2: no assignments -> entropy 0, loads 0 (by definition).
        // Iteration 3: 5, 5, 5 -> even: entropy 1, loads 1.
        let path = try tempPath()
        let h = try MetricsHistory(path: path, configJSON: config, iterations: 4, numExperts: 3)
        try h.append(ExpertRow(step: 1, counts: [6, 3, 3, 7, 0, 0, 0, 0, 0, 5, 5, 5], dropped: [0, 0, 0, 0],
                               probMean: [Float](repeating: 1.0 / 3, count: 12)))
        h.close()
        let f = try H5File.open(path: path)
        let tol = 1e-12
        assertClose(try f.read("experts/entropy", as: Double.self), [1.5 * log(2.0) / log(3.0), 0, 0, 1], tol)
        assertClose(try f.read("experts/max_load", as: Double.self), [1.5, 3, 0, 1], tol)
        assertClose(try f.read("experts/min_load", as: Double.self), [0.75, 0, 0, 1], tol)
        // A single expert is trivially even.
        let one = MetricsHistory.loadSummary(counts: [4], iterations: 1, experts: 1)
        XCTAssertEqual([one.entropy[0], one.maxLoad[0], one.minLoad[0]], [1, 1, 1])
    }

    private func assertClose(_ a: [Double], _ b: [Double], _ tol: Double, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, line: line)
        for (i, (x, y)) in zip(a, b).enumerated() {
            XCTAssertEqual(x, y, accuracy: tol, "element \(i)", line: line)
        }
    }

    func testH5pyReadsWhileHistoryIsOpen() throws {
        let path = try tempPath()
        let h = try MetricsHistory(path: path, configJSON: config, iterations: R, numExperts: E)
        let script = """
        import h5py, sys
        with h5py.File(sys.argv[1], 'r') as f:
            print(f.attrs['format'], list(map(int, f['train/step'][:])), f['experts/counts'].shape)
        """
        try h.append(trainRow(1)); try h.append(expertRow(1))
        XCTAssertEqual(try Python.run(script, [path]), "moe-dist/metrics [1] (1, 2, 3)\n")
        try h.append(trainRow(2)); try h.append(expertRow(2))
        XCTAssertEqual(try Python.run(script, [path]), "moe-dist/metrics [1, 2] (2, 2, 3)\n")
        try h.truncate(afterStep: 1)
        XCTAssertEqual(try Python.run(script, [path]), "moe-dist/metrics [1] (1, 2, 3)\n")
        try h.append(trainRow(3))   // still writable after readers came and went
        h.close()
        XCTAssertThrowsError(try h.append(trainRow(4))) { XCTAssertTrue("\($0)".contains("closed"), "\($0)") }
    }

    func testNewFileAppearsOnlyComplete() throws {
        let path = try tempPath()
        let dir = (path as NSString).deletingLastPathComponent
        _ = try MetricsHistory(path: path, configJSON: config, iterations: R, numExperts: E)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["metrics.h5"])
    }
}

/// python3 + h5py as an independent reader; skips the test when they are missing.

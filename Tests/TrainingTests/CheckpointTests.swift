// Checkpoints: bit-exact continuation at the same world size, continuation across world sizes
// 4 -> 2 -> 1 within the invariance tolerance, refusal of a changed architecture, and the SPEC
// section 6 layout read back by h5py.
import XCTest
import Foundation
import Collectives
import Configuration
import DataPipeline
import HDF5
import Model
import Training
import TestSupport

final class CheckpointTests: XCTestCase {
    var dir = ""
    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "moe-dist-ckpt-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    /// Runs `steps` steps at world size W, optionally loading `from` first and saving to `to` at the end.
    private func segment(_ c: RunConfig, _ data: TrainingData, W: Int, steps: Int, from: String?, to: String?)
        throws -> ([Double], GatheredParameters) {
        let gathered = GatheredParameters()
        final class Box: @unchecked Sendable { var losses: [Double] = [] }
        let box = Box()
        try ThreadWorld.run(size: W) { world in
            var cc = c; cc.train.microBatch = c.train.globalBatch / W
            let ctx = try ParallelContext.make(world: world, expertParallel: W, numExperts: cc.moe.numExperts)
            let t = try Trainer(config: cc, ctx: ctx, train: data.train)
            if let from { try Checkpoint.load(from, into: t) }
            let l = (0 ..< steps).map { _ in t.trainStep().loss }
            if let to { try Checkpoint.save(t, to: to) }
            gathered.add(t.model.store, rank: world.rank, firstCopy: true)
            if world.rank == 0 { box.losses = l }
        }
        return (box.losses, gathered)
    }

    func testBitExactContinuationAtSameWorldSize() throws {
        let (c, data) = try tinyRun(["train.max_steps=20"])
        for W in [1, 2] {
            let (full, fullParams) = try segment(c, data, W: W, steps: 20, from: nil, to: nil)
            let mid = dir + "/w\(W)-step10.h5"
            let (first, _) = try segment(c, data, W: W, steps: 10, from: nil, to: mid)
            let (second, params) = try segment(c, data, W: W, steps: 10, from: mid, to: nil)
            XCTAssertEqual(first + second, full, "losses must be bit-identical at world \(W)")
            XCTAssertEqual(params.maxDifference(to: fullParams), 0, "parameters must be bit-identical at world \(W)")
        }
    }

    func testContinuationAcrossWorldSizes4To2To1() throws {
        let (c, data) = try tinyRun(["moe.num_experts=12", "train.max_steps=30"])
        let (full, fullParams) = try segment(c, data, W: 1, steps: 30, from: nil, to: nil)
        let a = dir + "/a.h5", b = dir + "/b.h5"
        let (l1, _) = try segment(c, data, W: 4, steps: 10, from: nil, to: a)
        let (l2, _) = try segment(c, data, W: 2, steps: 10, from: a, to: b)
        let (l3, params) = try segment(c, data, W: 1, steps: 10, from: b, to: nil)
        assertClose(l1 + l2 + l3, full, rtol: 1e-5, atol: 0, "losses 4 -> 2 -> 1 vs uninterrupted")
        XCTAssertLessThan(params.maxDifference(to: fullParams), 1e-4)
    }

    func testChangedArchitectureIsRefused() throws {
        let (c, data) = try tinyRun()
        let path = dir + "/c.h5"
        _ = try segment(c, data, W: 1, steps: 1, from: nil, to: path)
        var changed = c; changed.moe.dFF = 48
        let t = try Trainer(config: changed, ctx: .single(numExperts: changed.moe.numExperts), train: data.train)
        XCTAssertThrowsError(try Checkpoint.load(path, into: t)) { e in
            XCTAssertTrue("\(e)".contains("moe.d_ff"), "\(e)")
        }
    }

    func testVerifyDetectsDamage() throws {
        let (c, data) = try tinyRun()
        let path = dir + "/v.h5"
        _ = try segment(c, data, W: 1, steps: 1, from: nil, to: path)
        XCTAssertNoThrow(try Checkpoint.verify(path))
        // Flip bytes in the middle of the file (tensor data): Fletcher-32 or the structure must catch it.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let damaged = dir + "/damaged.h5"
        for i in stride(from: bytes.count / 2, to: bytes.count / 2 + 4096, by: 7) { bytes[i] ^= 0x5A }
        try bytes.write(to: URL(fileURLWithPath: damaged))
        XCTAssertThrowsError(try Checkpoint.verify(damaged))
        try bytes.prefix(bytes.count / 3).write(to: URL(fileURLWithPath: damaged))
        XCTAssertThrowsError(try Checkpoint.verify(damaged))
        XCTAssertThrowsError(try Checkpoint.verify(dir + "/missing.h5")) { XCTAssertTrue("\($0)".contains("missing.h5")) }
    }

    /// The stored configuration and loader position are variable-length strings in HDF5's global heap,
    /// which no checksum covers: a changed byte there must fail their CRC-32, not load another config.
    func testAChangedConfigOrLoaderByteIsRefused() throws {
        let (c, data) = try tinyRun()
        let path = dir + "/s.h5"
        _ = try segment(c, data, W: 1, steps: 1, from: nil, to: path)
        let intact = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        for (text, attribute) in [(#""rope_base":"#, "@config"), (#""cursor":"#, "@loader")] {
            let pattern = Array(text.utf8)
            let at = (0...(intact.count - pattern.count)).filter { Array(intact[$0..<$0 + pattern.count]) == pattern }
            XCTAssertEqual(at.count, 1, "\(text) is stored once")
            var bytes = intact
            let digit = at[0] + pattern.count + (bytes[at[0] + pattern.count] == UInt8(ascii: " ") ? 1 : 0)
            bytes[digit] = bytes[digit] == UInt8(ascii: "1") ? UInt8(ascii: "2") : UInt8(ascii: "1")  // another number
            let damaged = dir + "/damaged.h5"
            try Data(bytes).write(to: URL(fileURLWithPath: damaged))
            XCTAssertThrowsError(try Checkpoint.verify(damaged)) {
                XCTAssertTrue("\($0)".contains(damaged) && "\($0)".contains(attribute) && "\($0)".contains("CRC-32"), "\($0)")
            }
        }
    }

    /// h5py reads a checkpoint written by a 2-rank run: every name, shape, dtype and attribute of SPEC section 6.
    func testLayoutReadByH5py() throws {
        let (c, data) = try tinyRun(["moe.activation=swiglu", "model.tie_embeddings=false"])
        let path = dir + "/h.h5"
        _ = try segment(c, data, W: 2, steps: 2, from: nil, to: path)
        var expected: [String: [Int]] = [:]
        for t in ModelTensors.list(c) { expected[t.path] = t.shape }
        let json = String(decoding: try JSONSerialization.data(withJSONObject: expected), as: UTF8.self)
        let script = """
        import h5py, json, sys
        exp = json.loads(sys.argv[2])
        f = h5py.File(sys.argv[1], "r")
        a = f.attrs
        assert a["format"] == "moe-dist/checkpoint", a["format"]
        assert int(a["version"]) == 1 and int(a["step"]) == 2 and int(a["world_size"]) == 2
        assert int(a["tokens"]) == 2 * 8 * 16, a["tokens"]
        cfg = json.loads(a["config"]); assert cfg["moe"]["activation"] == "swiglu"
        for section in ["params", "optim/exp_avg", "optim/exp_avg_sq"]:
            names = []
            f[section].visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) else None)
            assert sorted(names) == sorted(exp), (section, sorted(names))
            for n, shape in exp.items():
                d = f[section + "/" + n]
                assert list(d.shape) == shape and d.dtype == "float32", (n, d.shape, d.dtype)
                assert d.fletcher32
        w1 = f["params/ffn/0/w1"][...]
        assert (abs(w1).sum(axis=(1, 2)) > 0).all(), "every expert's rows were written"
        print("ok")
        """
        let out = try Python.run(script, [path, json])
        XCTAssertEqual(out.trimmingCharacters(in: .whitespacesAndNewlines), "ok")
    }
}

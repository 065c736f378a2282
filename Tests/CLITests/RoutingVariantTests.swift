// The routing variants of SPEC section 3 end to end: world-size invariance under mpirun, bit-exact resume
// with selection biases, and the history's /experts/bias and /experts/agreement read by h5py, checked
// against the bias rule computed from /experts/counts.
import XCTest
import Foundation
import HDF5
import TestSupport

final class RoutingVariantTests: XCTestCase {
    let steps = 20
    /// DeepSeek-V3's recipe on per-iteration routers: sigmoid scores, selection bias, sequence aux.
    let variant = ["moe.router_score=sigmoid", "moe.router_bias_rate=0.001", "moe.aux_scope=sequence",
                   "moe.aux_loss_coef=0.0001", "moe.routers=per_iteration"]

    private func run(_ args: [String], np: Int? = nil) throws -> CommandResult {
        if let np {
            let (exe, a) = try mpirun(np, args)
            return try runCommand(exe, a, environment: ["OPENBLAS_NUM_THREADS": "1"])
        }
        return try runCommand(moeDist, args, environment: ["OPENBLAS_NUM_THREADS": "1"])
    }

    /// (/train/loss, the checkpoint's /params and /buffers tensors) of a tiny run at world size W.
    private func train(np W: Int, extra: [String] = []) throws -> ([Double], [String: [Float]]) {
        let dir = temporaryDirectory("variant")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let args = ["train", "--config", tinyConfig, "--run-dir", dir, "moe.num_experts=40", "train.global_batch=8",
                    "train.micro_batch=\(8 / W)", "train.max_steps=\(steps)", "train.log_interval=1",
                    "train.checkpoint_interval=\(steps)", "train.eval_interval=\(steps)"] + variant + extra
        let r = try run(args, np: W > 1 ? W : nil)
        XCTAssertEqual(r.status, 0, "np \(W): \(r.stderr)")
        return try lossesAndCheckpointTensors(runDir: dir, step: steps, groups: ["params", "buffers"])
    }

    func testVariantIsInvariantUnderWorldSize() throws {
        try requireBinary()
        let (ref, refTensors) = try train(np: 1)
        XCTAssertEqual(ref.count, steps)
        XCTAssertEqual(refTensors.keys.filter { $0.hasPrefix("buffers/ffn/0/router_bias/") }.count, 2, "one bias per iteration")
        XCTAssertNotNil(refTensors["params/ffn/0/router/1"], "one router per iteration")
        for (np, extra) in [(2, [String]()), (4, []), (4, ["parallel.expert_parallel=2"])] {
            let (losses, tensors) = try train(np: np, extra: extra)
            assertClose(losses, ref, rtol: 1e-5, atol: 0, "losses at -np \(np) \(extra)")
            XCTAssertEqual(Set(tensors.keys), Set(refTensors.keys))
            for (k, v) in refTensors {
                // Biases move in steps of the rate: equal, as long as every rank made the same choices.
                if k.hasPrefix("buffers/") { XCTAssertEqual(tensors[k], v, "\(k) at -np \(np) \(extra)") }
                else { assertClose(tensors[k] ?? [], v, rtol: 1e-4, atol: 1e-4, "\(k) at -np \(np) \(extra)") }
            }
        }
    }

    func testResumeWithBiasesIsBitExact() throws {
        try requireBinary()
        let dir = temporaryDirectory("bias-resume"), whole = temporaryDirectory("bias-whole")
        defer { try? FileManager.default.removeItem(atPath: dir); try? FileManager.default.removeItem(atPath: whole) }
        let common = ["train", "--config", tinyConfig, "train.max_steps=12", "train.log_interval=1",
                      "train.checkpoint_interval=6", "train.eval_interval=100"] + variant
        XCTAssertEqual(try run(common + ["--run-dir", whole]).status, 0)
        // Killed right after the step-6 checkpoint is in place, then resumed.
        XCTAssertNotEqual(try run(common + ["--run-dir", dir, "--inject-kill", "after-rename@6"]).status, 0)
        let resumed = try run(common + ["--run-dir", dir, "--resume", "auto"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue((resumed.stdout + resumed.stderr).contains("step-00000006.h5 at step 6"), resumed.stdout)
        for name in ["train/loss", "experts/bias"] {
            let a = try H5File.open(path: whole + "/metrics.h5", readOnly: true, fileLocking: false)
            let b = try H5File.open(path: dir + "/metrics.h5", readOnly: true, fileLocking: false)
            defer { a.close(); b.close() }
            if name == "train/loss" {
                XCTAssertEqual(try a.read(name) as [Double], try b.read(name) as [Double], name)
            } else {
                XCTAssertEqual(try a.read(name) as [Float], try b.read(name) as [Float], name)
            }
        }
    }

    /// h5py reads /experts/bias [S, Q, E] and /experts/agreement [S, R−1]; with log_interval=1 the change of
    /// the bias between consecutive rows is γ·sign(mean − count) from that row's counts (summed over the
    /// iterations sharing the router), and agreement lies in [0, 1].
    func testBiasRuleAndShapesReadByH5py() throws {
        try requireBinary()
        for (label, extra, Q, agreement) in [("per-pool", ["moe.router_bias_rate=0.01"], 1, true),
                                             ("per-iteration", ["moe.router_bias_rate=0.01", "moe.routers=per_iteration"], 2, true),
                                             ("indexed", ["moe.router_bias_rate=0.01", "moe.experts=indexed"], 2, false)] {
            let dir = temporaryDirectory("bias-h5")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let r = try run(["train", "--config", tinyConfig, "--run-dir", dir, "train.max_steps=8", "train.log_interval=1"] + extra)
            XCTAssertEqual(r.status, 0, r.stderr)
            let out = try Python.run("""
            import sys, h5py, numpy as np
            f = h5py.File(sys.argv[1], "r", locking=False)
            Q, agreement = int(sys.argv[2]), sys.argv[3] == "1"
            cfg = __import__("json").loads(f.attrs["config"])
            R, E, rate = cfg["model"]["depth"], cfg["moe"]["num_experts"], cfg["moe"]["router_bias_rate"]
            x = f["experts"]
            S = x["step"].shape[0]
            assert x["bias"].shape == (S, Q, E) and x["bias"].dtype == np.float32, x["bias"].shape
            assert ("agreement" in x) == agreement, list(x)
            if agreement:
                a = x["agreement"][:]
                assert a.shape == (S, R - 1) and a.dtype == np.float64 and (a >= 0).all() and (a <= 1).all(), a
            bias, counts = x["bias"][:].astype(np.float64), x["counts"][:]
            per_iteration = Q == R
            for i in range(1, S):
                for q in range(Q):
                    c = counts[i, q] if per_iteration else counts[i].sum(0)   # shared: all iterations; indexed: pool q = iteration q
                    if cfg["moe"]["experts"] == "indexed": c = counts[i, q]
                    expected = rate * np.sign(c.mean() - c)
                    assert np.abs(bias[i, q] - bias[i - 1, q] - expected).max() < 1e-6, (i, q)
            print("ok", S)
            """, [dir + "/metrics.h5", "\(Q)", agreement ? "1" : "0"])
            XCTAssertTrue(out.hasPrefix("ok"), "\(label): \(out)")
        }
    }

    /// compare reports the max load of the worst iteration (not only the mean over iterations), equal to the
    /// highest per-iteration mean of /experts/max_load over the final interval computed by h5py.
    func testCompareReportsTheWorstIteration() throws {
        try requireBinary()
        let dir = temporaryDirectory("worst")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try run(["train", "--config", tinyConfig, "--run-dir", dir, "train.max_steps=20", "train.log_interval=2",
                         "train.eval_interval=10", "model.depth=3", "moe.aux_loss_coef=0"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let c = try runCommand(moeDist, ["compare", dir, "--json"])
        XCTAssertEqual(c.status, 0, c.stderr)
        let obj = try JSONSerialization.jsonObject(with: Data(c.stdout.utf8)) as? [String: Any]
        let row = try XCTUnwrap((obj?["runs"] as? [[String: Any]])?.first)
        let reported = try XCTUnwrap(row["worst_iteration_max_load"] as? Double)
        let out = try Python.run("""
        import sys, h5py, numpy as np
        f = h5py.File(sys.argv[1], "r", locking=False)
        ev = f["eval/step"][:]; st = f["experts/step"][:]
        rows = st > ev[-2]
        per_iteration = f["experts/max_load"][:][rows].mean(axis=0)
        print(per_iteration.max(), int(per_iteration.argmax()))
        """, [dir + "/metrics.h5"]).split(separator: " ")
        XCTAssertEqual(reported, Double(out[0].trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1, accuracy: 1e-9)
        XCTAssertEqual(row["worst_iteration"] as? Int, Int(out[1].trimmingCharacters(in: .whitespacesAndNewlines)))
    }
}

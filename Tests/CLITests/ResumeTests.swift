// Resumption that loses nothing, end to end:
// - kill test: a run killed with SIGKILL at 10 random moments (some during checkpoint writes) and resumed
//   each time with --resume auto ends with an intact newest checkpoint and a history whose steps are
//   strictly increasing with no gap;
// - h5py reads the metrics file of a 2-rank run: every name, shape, dtype and attribute of SPEC section 7,
//   and /experts/counts sum to tokens·k per iteration over each interval.
import XCTest
import Foundation
import HDF5
import TestSupport

final class ResumeTests: XCTestCase {
    func testKilledAtRandomMomentsAndResumed() throws {
        try requireBinary()
        let dir = temporaryDirectory("kill")
        let steps = 150
        let args = ["train", "--config", tinyConfig, "--run-dir", dir, "--resume", "auto",
                    "train.max_steps=\(steps)", "train.log_interval=1", "train.checkpoint_interval=3",
                    "train.eval_interval=25", "train.keep_checkpoints=2"]
        var rng = SystemRandomNumberGenerator()
        var kills = 0
        for attempt in 0 ..< 10 {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: moeDist)
            p.arguments = args
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            // Random moment: 0.15 .. 1.2 s (start-up, training, checkpoint writes every 3 steps).
            usleep(UInt32.random(in: 150_000 ... 1_200_000, using: &rng))
            if p.isRunning { kill(p.processIdentifier, SIGKILL); kills += 1 }
            p.waitUntilExit()
            // No file that looks like a finished checkpoint may be damaged.
            for ck in (try? FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints")) ?? [] where ck.hasSuffix(".h5") {
                let v = try runCommand(moeDist, ["ckpt", "verify", dir + "/checkpoints/" + ck])
                XCTAssertEqual(v.status, 0, "attempt \(attempt): \(ck) damaged: \(v.stderr)")
            }
        }
        XCTAssertGreaterThan(kills, 5, "most attempts were killed mid-run")
        // Finish the run.
        let last = try runCommand(moeDist, args)
        XCTAssertEqual(last.status, 0, last.stderr)
        let m = try H5File.open(path: dir + "/metrics.h5", readOnly: true, fileLocking: false)
        defer { m.close() }
        let trainSteps: [Int64] = try m.read("train/step")
        XCTAssertEqual(trainSteps, (1 ... Int64(steps)).map { $0 }, "every step once, in order")
        let expertSteps: [Int64] = try m.read("experts/step")
        XCTAssertEqual(expertSteps, trainSteps)
        let evalSteps: [Int64] = try m.read("eval/step")
        XCTAssertEqual(evalSteps, [25, 50, 75, 100, 125, 150])
        let newest = String(format: "%@/checkpoints/step-%08d.h5", dir, steps)
        XCTAssertEqual(try runCommand(moeDist, ["ckpt", "verify", newest]).status, 0)
    }

    func testMetricsOfTwoRankRunReadByH5py() throws {
        try requireBinary()
        let dir = temporaryDirectory("metrics")
        let (exe, a) = try mpirun(2, ["train", "--config", tinyConfig, "--run-dir", dir, "train.micro_batch=4",
                                      "train.max_steps=40", "train.log_interval=10", "train.eval_interval=20",
                                      "moe.capacity_factor=1.0"])
        let r = try runCommand(exe, a, environment: ["OPENBLAS_NUM_THREADS": "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let script = """
        import h5py, json, sys, numpy as np
        f = h5py.File(sys.argv[1], "r", locking=False)
        assert f.attrs["format"] == "moe-dist/metrics" and int(f.attrs["version"]) == 1
        cfg = json.loads(f.attrs["config"])
        R, E, k = cfg["model"]["depth"], cfg["moe"]["num_experts"], cfg["moe"]["top_k"]
        T, G = cfg["model"]["seq_len"], cfg["train"]["global_batch"]
        spec = {
          "train": {"step": "int64", "tokens": "int64", "epoch": "float64", "loss": "float64", "ce": "float64",
                    "aux": "float64", "z": "float64", "lr": "float64", "grad_norm": "float64",
                    "tokens_per_sec": "float64", "step_time": "float64", "nan_events": "int64"},
          "eval": {"step": "int64", "tokens": "int64", "epoch": "float64", "loss": "float64", "ppl": "float64", "scored": "int64"},
          "experts": {"step": "int64", "counts": "int64", "dropped": "int64", "prob_mean": "float32", "entropy": "float64",
                      "max_load": "float64", "min_load": "float64"},
        }
        shapes = {"counts": (R, E), "prob_mean": (R, E), "dropped": (R,), "entropy": (R,), "max_load": (R,), "min_load": (R,)}
        for g, names in spec.items():
            assert sorted(f[g].keys()) == sorted(names), (g, sorted(f[g].keys()))
            n = None
            for name, dt in names.items():
                d = f[g][name]
                assert d.dtype == dt, (g, name, d.dtype)
                assert d.chunks is not None and d.maxshape[0] is None, (g, name, "chunked, extendable")
                assert d.shape[1:] == shapes.get(name, ()), (g, name, d.shape)
                n = d.shape[0] if n is None else n
                assert d.shape[0] == n, (g, name, "same length")
            assert (np.diff(f[g]["step"][...]) > 0).all()
        assert list(f["train/step"][...]) == [10, 20, 30, 40]
        assert list(f["eval/step"][...]) == [20, 40]
        counts = f["experts/counts"][...]
        per_interval = 10 * G * T * k
        assert (counts.sum(axis=2) == per_interval).all(), counts.sum(axis=2)
        load = counts / counts.sum(axis=2, keepdims=True)
        ent = -(np.where(load > 0, load * np.log(load), 0)).sum(axis=2) / np.log(E)
        assert np.allclose(ent, f["experts/entropy"][...], rtol=1e-9)
        assert np.allclose(E * load.max(axis=2), f["experts/max_load"][...], rtol=1e-9)
        pm = f["experts/prob_mean"][...]
        assert np.allclose(pm.sum(axis=2), 1, atol=1e-4), pm.sum(axis=2)
        print("ok")
        """
        XCTAssertEqual(try Python.run(script, [dir + "/metrics.h5"]), "ok\n")
    }

    /// A full disk during a checkpoint: a clear message, a non-zero exit, and the previous checkpoint and
    /// the history untouched. Needs root to mount a small tmpfs (skipped otherwise).
    func testFullDiskDuringCheckpoint() throws {
        try requireBinary()
        let dir = temporaryDirectory("full")
        let mount = try runCommand("/bin/mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", dir])
        if mount.status != 0 { throw XCTSkip("cannot mount a tmpfs here (\(mount.stderr.trimmingCharacters(in: .whitespacesAndNewlines)))") }
        defer { _ = try? runCommand("/bin/umount", ["-l", dir]) }
        let run = dir + "/run"
        let args = ["train", "--config", tinyConfig, "--run-dir", run, "--resume", "auto", "train.checkpoint_interval=10",
                    "train.log_interval=5", "train.eval_interval=100"]
        XCTAssertEqual(try runCommand(moeDist, args + ["train.max_steps=10"]).status, 0)
        // Fill the file system.
        _ = try runCommand("/bin/dd", ["if=/dev/zero", "of=\(dir)/filler", "bs=4k"])
        let r = try runCommand(moeDist, args + ["train.max_steps=20"])
        XCTAssertNotEqual(r.status, 0, "a full disk must fail the run")
        XCTAssertTrue(r.stderr.lowercased().contains("space") || r.stderr.contains("HDF5"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: run + "/checkpoints/step-00000020.h5"))
        try FileManager.default.removeItem(atPath: dir + "/filler")
        XCTAssertEqual(try runCommand(moeDist, ["ckpt", "verify", run + "/checkpoints/step-00000010.h5"]).status, 0,
                       "the previous checkpoint is intact")
        let m = try H5File.open(path: run + "/metrics.h5", readOnly: true, fileLocking: false)
        let steps: [Int64] = try m.read("train/step")
        m.close()
        XCTAssertEqual(Array(steps.prefix(2)), [5, 10], "the history up to the checkpoint is intact")
        // And the run continues once there is space again.
        XCTAssertEqual(try runCommand(moeDist, args + ["train.max_steps=20"]).status, 0)
    }
}

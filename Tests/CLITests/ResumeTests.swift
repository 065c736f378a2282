// Resumption that loses nothing, end to end:
// - kill test: a 2-rank run killed with SIGKILL at 26 moments (19 inside checkpoint and history writes,
//   7 at random times) and resumed each time with --resume auto ends with intact checkpoints and a history
//   equal bit for bit to an uninterrupted run's;
// - h5py reads the metrics file of a 2-rank run: every name, shape, dtype and attribute of SPEC section 7,
//   and /experts/counts sum to tokens·k per iteration over each interval.
import XCTest
import Foundation
import HDF5
import TestSupport

final class ResumeTests: XCTestCase {
    /// A 2-rank run (ranks as threads) killed with SIGKILL at 26 moments and resumed with --resume auto each
    /// time: 19 moments chosen by the hidden `--inject-kill POINT@STEP` inside checkpoint and history writes
    /// (between the columns of a row, between /train and /experts, with the checkpoint only partly written,
    /// just before and just after its rename, after the history snapshot, while a resume opens the
    /// history), 7 at random times (start-up, resume, training; at the latest at the start of the sixth step after
    /// the resume, so that the run's speed cannot exhaust the schedule); every third attempt also tears
    /// metrics.h5 in half, as a kill in the middle of an HDF5 flush can. The finished history must equal
    /// an uninterrupted run's bit for bit in every column except the two timings (tokens_per_sec,
    /// step_time), and every checkpoint that looks finished must verify.
    func testKilledAtManyMomentsHistoryEqualsUninterruptedRun() throws {
        try requireBinary()
        let root = temporaryDirectory("kill")
        let steps = 64, interval = 4
        let common = ["train", "--config", tinyConfig, "--emulate-ranks", "2", "train.micro_batch=4",
                      "train.max_steps=\(steps)", "train.log_interval=1", "train.checkpoint_interval=\(interval)",
                      "train.eval_interval=10", "train.keep_checkpoints=2"]
        let reference = try runCommand(moeDist, common + ["--run-dir", root + "/reference"])
        XCTAssertEqual(reference.status, 0, reference.stderr)
        let dir = root + "/killed"
        let args = common + ["--run-dir", dir, "--resume", "auto"]
        func newestCheckpoint() -> Int {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints")) ?? []
            return names.filter { $0.hasPrefix("step-") && $0.hasSuffix(".h5") }
                .compactMap { Int($0.dropFirst(5).dropLast(3)) }.max() ?? 0
        }
        let schedule = ["after-rename", "history-column", "random", "checkpoint-partial", "after-rename", "history-row",
                        "random", "before-rename", "history-open", "after-rename", "random", "after-snapshot",
                        "history-column", "random", "after-rename", "history-open", "checkpoint-partial", "random",
                        "history-row", "before-rename", "after-rename", "random", "after-snapshot", "history-open",
                        "random", "after-rename"]
        var rng = SystemRandomNumberGenerator()
        var kills = 0, hooked = 0
        for (attempt, point) in schedule.enumerated() {
            let newest = newestCheckpoint()
            let nextCheckpoint = (newest / interval + 1) * interval
            var extra: [String] = []
            switch point {
            // A random kill lands in start-up, resume or the first steps; on a fast machine 3 s could run far
            // past the checkpoints the later kills need, so a backstop kills at the start of step newest + 6
            // (at most one more checkpoint per random attempt).
            case "random": extra = ["--inject-kill", "step-start@\(newest + 6)"]
            case "history-column", "history-row": extra = ["--inject-kill", "\(point)@\(newest + 1 + attempt % 3)"]
            case "history-open": extra = ["--inject-kill", newest > 0 ? "history-open@\(newest)" : "history-row@1"]
            default: extra = ["--inject-kill", "\(point)@\(nextCheckpoint)"]
            }
            XCTAssertLessThan(nextCheckpoint, steps, "attempt \(attempt): the run must not finish before the kills end")
            let p = Process()
            p.executableURL = URL(fileURLWithPath: moeDist)
            p.arguments = args + extra
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            if point == "random" {
                // 0.2 .. 3 s: start-up (about 2 s in a debug build), resume, a few steps, a checkpoint.
                usleep(UInt32.random(in: 200_000 ... 3_000_000, using: &rng))
                if p.isRunning { kill(p.processIdentifier, SIGKILL) }
            }
            p.waitUntilExit()
            let killed = p.terminationReason == .uncaughtSignal && p.terminationStatus == SIGKILL
            if killed { kills += 1 }
            if point != "random" {
                XCTAssertTrue(killed, "attempt \(attempt): \(extra) was not reached (status \(p.terminationStatus))")
                if killed { hooked += 1 }
            }
            // A kill in the middle of an HDF5 flush can leave metrics.h5 unreadable: tear it.
            if attempt % 3 == 2, let size = (try? FileManager.default.attributesOfItem(atPath: dir + "/metrics.h5"))?[.size] as? Int {
                XCTAssertEqual(truncate(dir + "/metrics.h5", off_t(size / 2)), 0)
            }
            // No file that looks like a finished checkpoint may be damaged.
            for ck in (try? FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints")) ?? [] where ck.hasSuffix(".h5") {
                let v = try runCommand(moeDist, ["ckpt", "verify", dir + "/checkpoints/" + ck])
                XCTAssertEqual(v.status, 0, "attempt \(attempt): \(ck) damaged: \(v.stderr)")
            }
        }
        XCTAssertGreaterThanOrEqual(kills, 20, "SIGKILL moments survived")
        XCTAssertEqual(hooked, schedule.filter { $0 != "random" }.count, "every kill point was reached")
        let last = try runCommand(moeDist, args)
        XCTAssertEqual(last.status, 0, last.stderr)
        try assertHistoriesEqual(reference: root + "/reference/metrics.h5", resumed: dir + "/metrics.h5", steps: steps)
        let newest = String(format: "%@/checkpoints/step-%08d.h5", dir, steps)
        XCTAssertEqual(try runCommand(moeDist, ["ckpt", "verify", newest]).status, 0)
    }

    /// Every dataset of the two histories, bit for bit, except the timings.
    private func assertHistoriesEqual(reference: String, resumed: String, steps: Int) throws {
        let a = try H5File.open(path: reference, readOnly: true, fileLocking: false)
        defer { a.close() }
        let b = try H5File.open(path: resumed, readOnly: true, fileLocking: false)
        defer { b.close() }
        let trainSteps: [Int64] = try b.read("train/step")
        XCTAssertEqual(trainSteps, (1 ... Int64(steps)).map { $0 }, "every step once, in order")
        let int64Columns = ["train/step", "train/tokens", "train/nan_events", "eval/step", "eval/tokens", "eval/scored",
                            "experts/step", "experts/counts", "experts/dropped"]
        let float64Columns = ["train/epoch", "train/loss", "train/ce", "train/aux", "train/z", "train/lr", "train/grad_norm",
                              "eval/epoch", "eval/loss", "eval/ppl", "experts/entropy", "experts/max_load", "experts/min_load"]
        for name in int64Columns {
            let x: [Int64] = try a.read(name), y: [Int64] = try b.read(name)
            XCTAssertEqual(x, y, name)
        }
        for name in float64Columns {
            let x: [Double] = try a.read(name), y: [Double] = try b.read(name)
            XCTAssertEqual(x.map(\.bitPattern), y.map(\.bitPattern), name)
        }
        let x: [Float] = try a.read("experts/prob_mean"), y: [Float] = try b.read("experts/prob_mean")
        XCTAssertEqual(x.map(\.bitPattern), y.map(\.bitPattern), "experts/prob_mean")
        let evalSteps: [Int64] = try b.read("eval/step")
        XCTAssertEqual(evalSteps, stride(from: 10, through: Int64(steps), by: 10).map { $0 } + (steps % 10 == 0 ? [] : [Int64(steps)]))
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
                      "max_load": "float64", "min_load": "float64", "agreement": "float64"},   # agreement: shared pool, R > 1
        }
        shapes = {"counts": (R, E), "prob_mean": (R, E), "dropped": (R,), "entropy": (R,), "max_load": (R,), "min_load": (R,),
                  "agreement": (R - 1,)}
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
    /// the history untouched. Needs root to mount a small tmpfs (a missing tool otherwise, see `missingTool`).
    func testFullDiskDuringCheckpoint() throws {
        try requireBinary()
        let dir = temporaryDirectory("full")
        let mount = try runCommand("/bin/mount", ["-t", "tmpfs", "-o", "size=4m", "tmpfs", dir])
        if mount.status != 0 { throw missingTool("cannot mount a tmpfs here (needs root; \(mount.stderr.trimmingCharacters(in: .whitespacesAndNewlines)))") }
        defer { _ = try? runCommand("/bin/umount", ["-l", dir]) }
        let run = dir + "/run"
        // The second run extends the budget: a recorded configuration change.
        let args = ["train", "--config", tinyConfig, "--run-dir", run, "--resume", "auto", "--allow-config-change",
                    "train.checkpoint_interval=10", "train.log_interval=5", "train.eval_interval=100"]
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

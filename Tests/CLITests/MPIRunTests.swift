// Real `mpirun` runs of the trainer:
// - invariance: tiny with 40 experts for 30 steps at -np 1, 2, 4 and at -np 4 with
//   parallel.expert_parallel=2 (micro-batch scaled so the global batch is the same) gives the same
//   loss sequence within 1e-5 relative (and -np 8, oversubscribed) and the same final parameters within 1e-4 (|a−b|/(1+|b|));
// - the in-process world of 4 (--emulate-ranks 4) gives the same results as mpirun -np 4;
// - a failing rank ends the job with its message within 30 s;
// - SIGUSR1 to mpirun (or SIGTERM to the ranks) writes a checkpoint and exits with status 75;
// - a configuration error is printed once and every rank exits with status 2 (no MPI_ABORT banner).
import XCTest
import Foundation
import TestSupport

final class MPIRunTests: XCTestCase {
    let steps = 30
    var common: [String] {
        ["moe.num_experts=40", "train.global_batch=8", "train.max_steps=\(steps)", "train.log_interval=1",
         "train.checkpoint_interval=\(steps)", "train.eval_interval=\(steps)"]
    }

    /// Trains and returns (/train/loss, final parameters by path).
    private func train(np: Int?, emulate: Int? = nil, extra: [String] = []) throws -> ([Double], [String: [Float]]) {
        let dir = temporaryDirectory("inv")
        let W = np ?? emulate ?? 1
        let args = ["train", "--config", tinyConfig, "--run-dir", dir] + common + ["train.micro_batch=\(8 / W)"] + extra
            + (emulate.map { ["--emulate-ranks", "\($0)"] } ?? [])
        let r: CommandResult
        if let np {
            let (exe, a) = try mpirun(np, args)
            r = try runCommand(exe, a, environment: ["OPENBLAS_NUM_THREADS": "1"])
        } else {
            r = try runCommand(moeDist, args, environment: ["OPENBLAS_NUM_THREADS": "1"])
        }
        XCTAssertEqual(r.status, 0, "np \(W): \(r.stderr)")
        return try lossesAndCheckpointTensors(runDir: dir, step: steps, groups: ["params"])
    }

    private func maxDifference(_ a: [String: [Float]], _ b: [String: [Float]]) -> Double {
        XCTAssertEqual(Set(a.keys), Set(b.keys))
        var worst = 0.0
        for (k, x) in a { for (u, v) in zip(x, b[k] ?? []) { worst = max(worst, Double(abs(u - v)) / (1 + Double(abs(v)))) } }
        return worst
    }

    func testInvarianceUnderMpirun() throws {
        try requireBinary()
        let (ref, refParams) = try train(np: 1)
        XCTAssertEqual(ref.count, steps)
        for (np, extra) in [(2, [String]()), (4, []), (4, ["parallel.expert_parallel=2"]), (8, [])] {
            let (losses, params) = try train(np: np, extra: extra)
            assertClose(losses, ref, rtol: 1e-5, atol: 0, "losses at -np \(np) \(extra)")
            let d = maxDifference(params, refParams)
            print("mpirun -np \(np) \(extra): max loss rel diff \(zip(losses, ref).map { abs($0 - $1) / $1 }.max() ?? 0), max parameter diff \(d)")
            XCTAssertLessThan(d, 1e-4, "parameters at -np \(np) \(extra)")
        }
    }

    func testEmulatedWorldMatchesMpirun() throws {
        try requireBinary()
        let (mpi, mpiParams) = try train(np: 4)
        let (emu, emuParams) = try train(np: nil, emulate: 4)
        assertClose(emu, mpi, rtol: 1e-5, atol: 0, "--emulate-ranks 4 vs mpirun -np 4")
        XCTAssertLessThan(maxDifference(emuParams, mpiParams), 1e-4)
    }

    func testFailingRankEndsTheJob() throws {
        try requireBinary()
        let dir = temporaryDirectory("fault")
        let (exe, args) = try mpirun(2, ["train", "--config", tinyConfig, "--run-dir", dir, "train.micro_batch=4",
                                         "train.max_steps=100000", "--inject-failure", "1:5"])
        let r = try runCommand(exe, args, timeout: 60)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertLessThan(r.seconds, 30, "the job ends within 30 s")
        XCTAssertTrue(r.stderr.contains("rank 1") && r.stderr.contains("injected failure"), r.stderr)
    }

    /// A configuration error is every rank's: it is printed once (by rank 0), every rank finalizes MPI and exits
    /// with 2, and mpirun returns 2 with no MPI_ABORT banner. Open MPI 4's mpirun still adds its own note that
    /// processes "exited with non-zero status" (it cannot be turned off from inside the job).
    func testConfigurationErrorUnderMpirunIsSaidOnceAndExits2() throws {
        try requireBinary()
        let dir = temporaryDirectory("mpi-config")
        let cases: [([String], String)] = [
            (["train", "--config", tinyConfig, "--run-dir", dir + "/a", "moe.bogus_key=1"], "moe.bogus_key"),
            (["train", "--config", tinyConfig, "--run-dir", dir + "/b", "train.global_batch=7"], "train.global_batch"),
            (["bench", "--config", tinyConfig, "moe.top_k=9"], "moe.top_k"),
        ]
        for (args, key) in cases {
            let (exe, a) = try mpirun(2, args)
            let r = try runCommand(exe, a, timeout: 60)
            XCTAssertEqual(r.status, 2, "\(args): \(r.stderr)")
            XCTAssertEqual(r.stderr.components(separatedBy: "moe-dist: ").count - 1, 1, "one message: \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(key), r.stderr)
            XCTAssertFalse(r.stderr.contains("MPI_ABORT") || r.stderr.contains("MPI_Abort"), r.stderr)
        }
        // A run directory with an earlier run's checkpoints, without --resume: the same, once.
        XCTAssertEqual(try runCommand(moeDist, ["train", "--config", tinyConfig, "--run-dir", dir + "/c", "train.max_steps=2"]).status, 0)
        let (exe, a) = try mpirun(2, ["train", "--config", tinyConfig, "--run-dir", dir + "/c", "train.max_steps=2"])
        let stale = try runCommand(exe, a, timeout: 60)
        XCTAssertEqual(stale.status, 2, stale.stderr)
        XCTAssertEqual(stale.stderr.components(separatedBy: "already holds checkpoints").count - 1, 1, stale.stderr)
        XCTAssertFalse(stale.stderr.contains("MPI_ABORT"), stale.stderr)
    }

    /// Slurm sends SIGUSR1 (with --signal=USR1@T) or SIGTERM to the tasks before the time limit.
    func testPreemptionWritesCheckpointAndExits75() throws {
        try requireBinary()
        for (signal, target) in [(SIGUSR1, "mpirun"), (SIGTERM, "ranks")] {
            let dir = temporaryDirectory("preempt")
            let (exe, args) = try mpirun(2, ["train", "--config", tinyConfig, "--run-dir", dir, "train.micro_batch=4",
                                             "train.max_steps=1000000", "train.log_interval=1"])
            let p = Process()
            p.executableURL = URL(fileURLWithPath: exe)
            p.arguments = args
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            // Wait until training is under way (metrics rows appear), then signal.
            let start = Date()
            while !FileManager.default.fileExists(atPath: dir + "/train.log") || ((try? String(contentsOfFile: dir + "/train.log", encoding: .utf8))?.contains("step 20/") != true) {
                if Date().timeIntervalSince(start) > 60 { break }
                usleep(100_000)
            }
            if target == "mpirun" {
                kill(p.processIdentifier, signal)
            } else {
                let pk = try runCommand("/usr/bin/pkill", ["-\(signal)", "-P", "\(p.processIdentifier)"])
                XCTAssertEqual(pk.status, 0, "ranks found")
            }
            let deadline = Date().addingTimeInterval(60)
            while p.isRunning && Date() < deadline { usleep(100_000) }
            if p.isRunning { p.terminate(); XCTFail("did not stop after \(signal)") }
            p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 75, "exit status after signal \(signal) to \(target)")
            let ckpts = (try? FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints")) ?? []
            XCTAssertEqual(ckpts.filter { $0.hasSuffix(".h5") }.count, 1, "a checkpoint was written: \(ckpts)")
            let log = (try? String(contentsOfFile: dir + "/train.log", encoding: .utf8)) ?? ""
            XCTAssertTrue(log.contains("received: stopped after step"), log)
        }
    }
}

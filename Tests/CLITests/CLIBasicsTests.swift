// The command line end to end: help texts, configuration errors that name the key and write
// nothing, and the whole-model gradient check of every variant.
import XCTest
import TestSupport

final class CLIBasicsTests: XCTestCase {
    func testHelpOnEveryCommand() throws {
        try requireBinary()
        let commands = [[], ["train"], ["eval"], ["ckpt"], ["ckpt", "inspect"], ["ckpt", "verify"], ["gate"], ["sweep"],
                        ["compare"], ["curves"], ["bench"], ["estimate"], ["config"], ["data"], ["data", "prepare"],
                        ["data", "encode"], ["data", "decode"], ["data", "inspect"], ["debug"], ["debug", "grads"],
                        ["debug", "gradcheck"], ["debug", "collectives"], ["sample"], ["route"], ["export"]]
        for cmd in commands {
            let r = try runCommand(moeDist, cmd + ["--help"])
            XCTAssertEqual(r.status, 0, "\(cmd) --help")
            XCTAssertTrue(r.stdout.contains("USAGE"), "\(cmd) --help prints usage")
            // Wrapped for 80 columns (HelpText.swift): no line longer, except ArgumentParser's one-line USAGE.
            for line in r.stdout.split(separator: "\n") where !line.hasPrefix("USAGE:") {
                XCTAssertLessThanOrEqual(line.count, 80, "\(cmd) --help: \(line)")
            }
        }
    }

    /// An unknown command is a usage error (status 2) that names it, with or without --help after it.
    func testUnknownCommandIsAUsageError() throws {
        try requireBinary()
        for args in [["frobnicate"], ["frobnicate", "--help"], ["frobnicate", "--config", "x.yaml"]] {
            let r = try runCommand(moeDist, args)
            XCTAssertEqual(r.status, 2, "\(args): \(r.stdout)")
            XCTAssertTrue(r.stderr.contains("unknown command 'frobnicate'") && r.stderr.contains("train, eval"), r.stderr)
            XCTAssertFalse(r.stdout.contains("USAGE"), "no root help on standard output: \(r.stdout)")
        }
        XCTAssertEqual(try runCommand(moeDist, ["help", "train"]).status, 0)
        XCTAssertEqual(try runCommand(moeDist, ["--help"]).status, 0)
    }

    /// Each bad input stops before any work with one line naming the key (or file), a non-zero
    /// status, and no run directory.
    func testConfigurationErrorsNameTheKeyAndWriteNothing() throws {
        try requireBinary()
        let cases: [([String], String)] = [
            (["moe.bogus_key=1"], "moe.bogus_key"),
            (["moe.top_k=two"], "moe.top_k"),
            (["moe.top_k=9"], "moe.top_k"),                 // tiny has 8 experts
            (["model.n_heads=3"], "model.n_heads"),          // 32 % 3 != 0
            (["model.n_heads=32"], "head"),                  // head width 1 is odd
            (["moe.capacity_factor=-1"], "moe.capacity_factor"),
            (["train.lr=0"], "train.lr"),
            (["model.d_model"], "model.d_model"),            // malformed override
        ]
        for (overrides, key) in cases {
            let dir = temporaryDirectory("cfg") + "/run"
            let r = try runCommand(moeDist, ["train", "--config", tinyConfig, "--run-dir", dir] + overrides)
            XCTAssertNotEqual(r.status, 0, "\(overrides) must fail")
            let lines = r.stderr.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, "\(overrides): one line, got \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(key), "\(overrides): message names \(key): \(r.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir), "\(overrides): nothing written")
        }
        let missing = try runCommand(moeDist, ["train", "--config", "/nonexistent/x.yaml"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.stderr.contains("/nonexistent/x.yaml"), missing.stderr)
    }

    /// The batch rule (Configuration/BatchFit.swift) end to end: tiny's micro-batch 8 on 4 ranks does not
    /// divide its global batch 8, so the run uses 2, says so in one line and records it in config.yaml;
    /// 3 ranks cannot split 8 sequences, and the error names the override, which then works.
    func testMicroBatchIsFittedToTheWorldAndImpossibleWorldsNameTheOverride() throws {
        try requireBinary()
        let dir = temporaryDirectory("fit")
        let r = try runCommand(moeDist, ["train", "--config", tinyConfig, "--run-dir", dir, "--emulate-ranks", "4",
                                         "train.max_steps=2"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let notes = r.stdout.split(separator: "\n").filter { $0.contains("using train.micro_batch=2") }
        XCTAssertEqual(notes.count, 1, r.stdout)
        let yaml = try String(contentsOfFile: dir + "/config.yaml", encoding: .utf8)
        XCTAssertTrue(yaml.contains("micro_batch: 2"), yaml)
        XCTAssertTrue(yaml.contains("global_batch: 8"), yaml)

        let bad = try runCommand(moeDist, ["train", "--config", tinyConfig, "--run-dir", dir + "/3", "--emulate-ranks", "3",
                                           "train.max_steps=2"])
        XCTAssertEqual(bad.status, 2)
        XCTAssertTrue(bad.stderr.contains("train.global_batch=9"), bad.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/3"))
        let fixed = try runCommand(moeDist, ["train", "--config", tinyConfig, "--run-dir", dir + "/3", "--emulate-ranks", "3",
                                             "train.max_steps=2", "train.global_batch=9"])
        XCTAssertEqual(fixed.status, 0, fixed.stderr)
    }

    func testGradientCheckOfEveryVariantOnTiny() throws {
        try requireBinary()
        let r = try runCommand(moeDist, ["debug", "gradcheck", "--config", tinyConfig, "--variants"])
        XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
        XCTAssertTrue(r.stdout.contains("gradient check passed"))
        XCTAssertEqual(r.stdout.components(separatedBy: "== ").count - 1, 20, "20 variants checked (13 + 7 routing variants)")
        for v in ["sigmoid scores", "sequence aux", "per-iteration routers", "selection bias"] {
            XCTAssertTrue(r.stdout.contains("== \(v)"), v)
        }
    }

    func testTinyTrainsAndItsLossFalls() throws {
        try requireBinary()
        let dir = temporaryDirectory("tiny")
        let r = try runCommand(moeDist, ["train", "--config", tinyConfig, "--run-dir", dir])
        XCTAssertEqual(r.status, 0, r.stderr)
        let losses = r.stdout.split(separator: "\n").filter { $0.hasPrefix("step ") }.compactMap { line -> Double? in
            guard let range = line.range(of: "| loss ") else { return nil }
            return Double(line[range.upperBound...].prefix { $0 != " " })
        }
        XCTAssertEqual(losses.count, 20)
        XCTAssertLessThan(losses.last!, losses.first! - 1.5, "loss falls by at least 1.5 nats: \(losses)")
        for f in ["config.yaml", "train.log", "metrics.h5", "checkpoints/step-00000200.h5"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/" + f), f)
        }
    }

    /// A fresh run in a directory that holds an earlier run's checkpoints is refused (it would prune them
    /// and mix histories); --resume auto continues instead.
    func testFreshRunRefusesAnEarlierRunsDirectory() throws {
        try requireBinary()
        let dir = temporaryDirectory("stale")
        let base = ["train", "--config", tinyConfig, "--run-dir", dir, "train.max_steps=10", "train.checkpoint_interval=10"]
        XCTAssertEqual(try runCommand(moeDist, base).status, 0)
        let again = try runCommand(moeDist, base + ["train.max_steps=20"])
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.stderr.contains("--resume auto"), again.stderr)
        // A changed optimisation key (the learning rate) is refused on resume without the flag, naming it.
        let lr = try runCommand(moeDist, base + ["train.max_steps=20", "train.lr=1e-3", "--resume", "auto"])
        XCTAssertEqual(lr.status, 2, lr.stderr)
        XCTAssertTrue(lr.stderr.contains("train.lr 0.003 -> 0.001") && lr.stderr.contains("--allow-config-change"), lr.stderr)
        XCTAssertFalse(lr.stderr.contains("train.max_steps"), "a budget key is not among the refused ones: \(lr.stderr)")
        // A longer budget and new intervals are not: the run continues without the flag, says where the cosine
        // now ends (SPEC: at the step budget), and records the changes in config_changes.
        let longer = try runCommand(moeDist, base + ["train.max_steps=20", "train.checkpoint_interval=5", "train.log_interval=5",
                                                     "train.keep_checkpoints=4", "--resume", "auto"])
        XCTAssertEqual(longer.status, 0, longer.stderr)
        XCTAssertTrue(longer.stdout.contains("learning-rate schedule: the step budget changes from 10 to 20 steps, so the cosine "
                                             + "now reaches its minimum at step 20 instead of 10"), longer.stdout)
        let out = try Python.run("""
            import h5py, json, sys
            with h5py.File(sys.argv[1], "r") as f:
                got = sorted((c["step"], c["key"], c["old"], c["new"]) for c in json.loads(f.attrs["config_changes"]))
            assert got == [(10, "train.checkpoint_interval", 10, 5), (10, "train.keep_checkpoints", 2, 4),
                           (10, "train.log_interval", 10, 5), (10, "train.max_steps", 10, 20)], got
            print("ok")
            """, [dir + "/metrics.h5"])
        XCTAssertEqual(out, "ok\n")
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/checkpoints/step-00000015.h5"), "the new interval is used")
        // --resume auto on the finished run says so, and prints no banner.
        let finished = try runCommand(moeDist, base + ["train.max_steps=20", "train.checkpoint_interval=5", "train.log_interval=5",
                                                       "train.keep_checkpoints=4", "--resume", "auto"])
        XCTAssertEqual(finished.status, 0, finished.stderr)
        XCTAssertTrue(finished.stdout.contains("\(dir) is finished: its checkpoint is at step 20, the end of its budget "
                                               + "(train.max_steps 20, 20 steps); nothing to train."), finished.stdout)
        XCTAssertFalse(finished.stdout.contains("resolved configuration"), finished.stdout)
    }
}

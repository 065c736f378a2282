// Nothing mixed up, end to end through the binary:
// - tokenizer fingerprints (SPEC section 8): `data prepare` writes header bytes 28..<36 = the first 8 bytes
//   of hashlib's SHA-256 of the tokenizer.json (Python, an independent implementation); train, eval,
//   --resume and data decode refuse another tokenizer's token file of the same vocabulary size, naming
//   both files (exit status 3); a fingerprint-0 file trains with a one-line warning;
// - resume with a changed key (other than a budget key): refused without --allow-config-change (exit status 2, each key old -> new,
//   nothing printed before the error), recorded with it (metrics.h5 keeps the original config, and
//   config_changes holds key, old, new and step, read with h5py);
// - gate, compare and curves on directories that hold only metrics.h5 give what they give on the full run
//   directories; sweep --gate reads relative run directories as relative to the gate file;
// - the same bad input gives the same exit status in every command (docs/exit-status.md).
import XCTest
import Foundation
import TestSupport

final class IntegrityTests: XCTestCase {
    /// Two tokenizers with the same vocabulary size (300) learned from different texts, each with its files.
    nonisolated(unsafe) private static var prepared: (a: String, b: String)?

    private func prepareTwoTokenizers() throws -> (a: String, b: String) {
        try requireBinary()
        if let p = Self.prepared { return p }
        let dir = temporaryDirectory("fingerprint")
        var outs: [String] = []
        for (name, source) in [("a", "wiki.valid.tokens"), ("b", "wiki.test.tokens")] {
            let text = try Data(contentsOf: URL(fileURLWithPath: try TestPaths.wikitext2File(source))).prefix(60_000)
            let path = "\(dir)/\(name).txt"
            try text.write(to: URL(fileURLWithPath: path))
            let out = "\(dir)/\(name)"
            let r = try runCommand(moeDist, ["data", "prepare", "--train", path, "--valid", path, "--vocab-size", "300", "--out", out])
            XCTAssertEqual(r.status, 0, r.stderr)
            outs.append(out)
        }
        Self.prepared = (outs[0], outs[1])
        return (outs[0], outs[1])
    }

    private func trainArgs(_ dir: String, _ extra: [String]) -> [String] {
        ["train", "--config", tinyConfig, "--run-dir", dir, "train.max_steps=4", "train.checkpoint_interval=2",
         "train.log_interval=2", "train.eval_interval=2", "train.eval_tokens=256"] + extra
    }

    func testFingerprintsWrittenAndForeignTokenFilesRefused() throws {
        let (a, b) = try prepareTwoTokenizers()
        // Header bytes 28..<36 against Python's hashlib.
        let check = """
        import hashlib, struct, sys
        for d in sys.argv[1:]:
            fp = hashlib.sha256(open(d + "/tokenizer.json", "rb").read()).digest()[:8]
            for split in ("train", "valid"):
                h = open(d + "/" + split + ".tok", "rb").read(64)
                assert h[28:36] == fp and h[36:64] == bytes(28), (d, split, h[28:36].hex(), fp.hex())
            assert struct.unpack("<I", h[24:28])[0] == 300
        print(hashlib.sha256(open(sys.argv[1] + "/tokenizer.json", "rb").read()).digest()[:8][::-1].hex())
        """
        let fingerprintA = try Python.run(check, [a, b]).trimmingCharacters(in: .whitespacesAndNewlines)
        let inspect = try runCommand(moeDist, ["data", "inspect", a + "/train.tok", "--tokenizer", a + "/tokenizer.json"])
        XCTAssertTrue(inspect.stdout.contains("fingerprint \(fingerprintA) (matches"), inspect.stdout)
        // data encode writes the fingerprint of the tokenizer.json it loads.
        let encoded = temporaryDirectory("encode") + "/b-with-a.tok"
        XCTAssertEqual(try runCommand(moeDist, ["data", "encode", "--tokenizer", a + "/tokenizer.json", "--input",
                                                b + "/../b.txt", "--out", encoded]).status, 0)
        let header = [UInt8](try Data(contentsOf: URL(fileURLWithPath: encoded)).prefix(36))
        XCTAssertEqual(String(header[28 ..< 36].reversed().map { String(format: "%02x", $0) }.joined()), fingerprintA)

        let root = temporaryDirectory("foreign")
        // train: valid from the other tokenizer; data.tokenizer from the other tokenizer; a missing data.tokenizer.
        let mixed = try runCommand(moeDist, trainArgs(root + "/mixed", ["data.train=\(a)/train.tok", "data.valid=\(b)/valid.tok"]))
        XCTAssertEqual(mixed.status, 3, mixed.stderr)
        XCTAssertTrue(mixed.stderr.contains("\(a)/train.tok") && mixed.stderr.contains("\(b)/valid.tok"), mixed.stderr)
        let tok = try runCommand(moeDist, trainArgs(root + "/tok", ["data.train=\(a)/train.tok", "data.valid=\(a)/valid.tok",
                                                                     "data.tokenizer=\(b)/tokenizer.json"]))
        XCTAssertEqual(tok.status, 3, tok.stderr)
        XCTAssertTrue(tok.stderr.contains("\(a)/train.tok") && tok.stderr.contains("\(b)/tokenizer.json"), tok.stderr)
        let nope = try runCommand(moeDist, trainArgs(root + "/nope", ["data.train=\(a)/train.tok", "data.tokenizer=\(root)/nope.json"]))
        XCTAssertEqual(nope.status, 3, nope.stderr)
        XCTAssertTrue(nope.stderr.contains("data.tokenizer") && nope.stderr.contains("nope.json"), nope.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/mixed/metrics.h5"), "a refused run writes nothing")

        // A run on A's files: its checkpoint records A's fingerprint.
        let run = root + "/run"
        let ok = try runCommand(moeDist, trainArgs(run, ["data.train=\(a)/train.tok", "data.valid=\(a)/valid.tok",
                                                         "data.tokenizer=\(a)/tokenizer.json"]))
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertFalse(ok.stdout.contains("warning"), ok.stdout)
        let ck = run + "/checkpoints/step-00000004.h5"
        let stored = try Python.run("""
            import h5py, sys, numpy as np
            with h5py.File(sys.argv[1], "r") as f:
                print(format(int(np.int64(f.attrs["tokenizer_fingerprint"]).view(np.uint64)), "016x"))
            """, [ck]).trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertEqual(stored, fingerprintA)
        XCTAssertTrue(try runCommand(moeDist, ["ckpt", "inspect", ck]).stdout.contains("tokenizer fingerprint \(fingerprintA)"))

        // eval and --resume refuse B's file, naming both; data decode refuses A's file with B's tokenizer.
        let ev = try runCommand(moeDist, ["eval", "--checkpoint", ck, "--data", b + "/valid.tok"])
        XCTAssertEqual(ev.status, 3, ev.stderr)
        XCTAssertTrue(ev.stderr.contains(ck) && ev.stderr.contains("\(b)/valid.tok"), ev.stderr)
        XCTAssertEqual(ev.stderr.components(separatedBy: "\(b)/valid.tok").count, 2, "the path once: \(ev.stderr)")
        let resumed = try runCommand(moeDist, trainArgs(run, ["--resume", "auto", "data.train=\(b)/train.tok",
                                                              "data.valid=\(b)/valid.tok", "train.max_steps=6"]))
        XCTAssertEqual(resumed.status, 3, resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains(ck) && resumed.stderr.contains("\(b)/train.tok"), resumed.stderr)
        XCTAssertFalse(resumed.stdout.contains("resolved configuration"), "refused before the configuration is printed")
        let dec = try runCommand(moeDist, ["data", "decode", "--tokenizer", b + "/tokenizer.json", "--input", a + "/valid.tok"])
        XCTAssertEqual(dec.status, 3, dec.stderr)
        XCTAssertTrue(dec.stdout.isEmpty && dec.stderr.contains("\(a)/valid.tok") && dec.stderr.contains("\(b)/tokenizer.json"), dec.stderr)

        // An old file (fingerprint 0) trains, with one warning line naming it.
        let old = root + "/old-valid.tok"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: a + "/valid.tok"))
        bytes.replaceSubrange(28 ..< 36, with: [UInt8](repeating: 0, count: 8))
        try bytes.write(to: URL(fileURLWithPath: old))
        let legacy = try runCommand(moeDist, trainArgs(root + "/legacy", ["data.train=\(a)/train.tok", "data.valid=\(old)"]))
        XCTAssertEqual(legacy.status, 0, legacy.stderr)
        XCTAssertEqual(legacy.stdout.split(separator: "\n").filter { $0.contains("warning") && $0.contains(old) }.count, 1, legacy.stdout)
        let legacyEval = try runCommand(moeDist, ["eval", "--checkpoint", ck, "--data", old])
        XCTAssertEqual(legacyEval.status, 0, legacyEval.stderr)
        XCTAssertTrue(legacyEval.stderr.contains("warning") && legacyEval.stderr.contains(old), legacyEval.stderr)
    }

    func testResumeWithChangedKeyRefusedThenRecorded() throws {
        try requireBinary()
        let dir = temporaryDirectory("config-change")
        let first = try runCommand(moeDist, trainArgs(dir, ["train.max_steps=20", "train.checkpoint_interval=10",
                                                            "train.log_interval=5", "train.eval_interval=10"]))
        XCTAssertEqual(first.status, 0, first.stderr)
        let changed = trainArgs(dir, ["--resume", "auto", "train.max_steps=30", "train.checkpoint_interval=10",
                                      "train.log_interval=5", "train.eval_interval=10", "moe.aux_loss_coef=0.05"])
        let refused = try runCommand(moeDist, changed)
        XCTAssertEqual(refused.status, 2, refused.stderr)
        XCTAssertTrue(refused.stderr.contains("moe.aux_loss_coef 0.01 -> 0.05"), refused.stderr)
        XCTAssertFalse(refused.stderr.contains("train.max_steps"), "a budget key needs no flag: \(refused.stderr)")
        XCTAssertTrue(refused.stderr.contains("--allow-config-change"), refused.stderr)
        XCTAssertFalse(refused.stdout.contains("resolved configuration"), refused.stdout)

        let allowed = try runCommand(moeDist, changed + ["--allow-config-change"])
        XCTAssertEqual(allowed.status, 0, allowed.stderr)
        XCTAssertTrue(allowed.stdout.contains("configuration changed on resume at step 20: "), allowed.stdout)
        XCTAssertTrue(allowed.stdout.contains("learning-rate schedule: the step budget changes from 20 to 30 steps"), allowed.stdout)
        let out = try Python.run("""
            import h5py, json, sys
            with h5py.File(sys.argv[1], "r") as f:
                cfg = json.loads(f.attrs["config"])
                changes = json.loads(f.attrs["config_changes"])
                steps = list(f["train/step"][...])
            assert cfg["moe"]["aux_loss_coef"] == 0.01 and cfg["train"]["max_steps"] == 20, cfg
            got = sorted((c["step"], c["key"], c["old"], c["new"]) for c in changes)
            assert got == [(20, "moe.aux_loss_coef", 0.01, 0.05), (20, "train.max_steps", 20, 30)], got
            assert steps == [5, 10, 15, 20, 25, 30], steps
            print("ok")
            """, [dir + "/metrics.h5"])
        XCTAssertEqual(out, "ok\n")
        // Resuming again with the same (changed) values continues without the flag: the checkpoint has them.
        let again = try runCommand(moeDist, trainArgs(dir, ["--resume", "auto", "train.max_steps=30", "train.checkpoint_interval=10",
                                                            "train.log_interval=5", "train.eval_interval=10", "moe.aux_loss_coef=0.05"]))
        XCTAssertEqual(again.status, 0, again.stderr)
    }

    func testSameBadInputSameExitStatusEverywhere() throws {
        let (a, _) = try prepareTwoTokenizers()
        let root = temporaryDirectory("status")
        // A truncated token file: bad data (3) for train, eval and data decode, the path named once.
        let cut = root + "/cut.tok"
        let bytes = try Data(contentsOf: URL(fileURLWithPath: a + "/valid.tok"))
        try bytes.prefix(bytes.count - 3).write(to: URL(fileURLWithPath: cut))
        let run = root + "/run"
        XCTAssertEqual(try runCommand(moeDist, trainArgs(run, ["data.train=\(a)/train.tok"])).status, 0)
        let results = [
            try runCommand(moeDist, trainArgs(root + "/t", ["data.train=\(cut)"])),
            try runCommand(moeDist, ["eval", "--checkpoint", run + "/checkpoints/step-00000004.h5", "--data", cut]),
            try runCommand(moeDist, ["data", "decode", "--tokenizer", a + "/tokenizer.json", "--input", cut]),
        ]
        for r in results {
            XCTAssertEqual(r.status, 3, r.stderr)
            XCTAssertEqual(r.stderr.components(separatedBy: cut).count, 2, "the path once: \(r.stderr)")
        }
        // A missing checkpoint: refused before the configuration is printed.
        let missing = try runCommand(moeDist, trainArgs(root + "/m", ["--resume", root + "/none.h5"]))
        XCTAssertEqual(missing.status, 3, missing.stderr)
        XCTAssertFalse(missing.stdout.contains("resolved configuration"), missing.stdout)
        // Usage and configuration errors: 2.
        XCTAssertEqual(try runCommand(moeDist, ["train", "--no-such-option"]).status, 2)
        XCTAssertEqual(try runCommand(moeDist, trainArgs(root + "/k", ["moe.no_such_key=1"])).status, 2)
        XCTAssertEqual(try runCommand(moeDist, ["eval", "--checkpoint", "x", "--data", "y", "--max-tokens", "1"]).status, 2)
    }

    func testMetricsOnlyDirectoriesAndGateFileRelativePaths() throws {
        try requireBinary()
        let root = temporaryDirectory("metrics-only")
        let full = root + "/full", copies = root + "/copies"
        for (name, aux) in [("a", "0.01"), ("b", "0.0")] {
            let r = try runCommand(moeDist, trainArgs("\(full)/\(name)", ["name=p1-aux\(aux)", "moe.aux_loss_coef=\(aux)",
                                                                        "train.max_steps=20", "train.eval_interval=10",
                                                                        "train.log_interval=5", "train.checkpoint_interval=10"]))
            XCTAssertEqual(r.status, 0, r.stderr)
            try FileManager.default.createDirectory(atPath: "\(copies)/\(name)", withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: "\(full)/\(name)/metrics.h5", toPath: "\(copies)/\(name)/metrics.h5")
        }
        // Each command gives the same output on the copies (paths aside) as on the full directories.
        for command in [["gate", "a", "b", "--reference", "a", "--json"], ["compare", "a", "b", "--json"], ["curves", "a"]] {
            let onFull = try runCommand(moeDist, command, cwd: full)
            let onCopies = try runCommand(moeDist, command, cwd: copies)
            XCTAssertEqual(onFull.status, 0, onFull.stderr)
            XCTAssertEqual(onCopies.status, 0, "\(command[0]) on metrics.h5 alone: \(onCopies.stderr)")
            XCTAssertEqual(onCopies.stdout, onFull.stdout, command[0])
            XCTAssertTrue(command[0] == "curves" || onCopies.stdout.contains("p1-aux0.01"), "names from the config attribute")
        }
        // A gate file with relative run directories, used from another working directory.
        let gate = try runCommand(moeDist, ["gate", "a", "b", "--reference", "a", "--json"], cwd: copies)
        try gate.stdout.write(toFile: copies + "/gate.json", atomically: true, encoding: .utf8)
        let sweep = try runCommand(moeDist, ["sweep", "--phase", "2", "--base", tinyConfig, "--out", root + "/sw",
                                             "--gate", "copies/gate.json"], cwd: root)
        XCTAssertEqual(sweep.status, 0, sweep.stderr)
        let manifest = try String(contentsOfFile: root + "/sw/phase-2/runs.txt", encoding: .utf8)
        XCTAssertTrue(manifest.contains("p2-aux0.01.yaml") && manifest.contains("p2-aux0.0.yaml"), manifest)
    }
}

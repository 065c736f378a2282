// Replicates through the CLI: `sweep --seeds N` writes N distinct seeds per arm, each a line of the
// Slurm array manifest, varying what --vary says.
import XCTest
import Foundation
import TestSupport

final class ReplicateCommandsTests: XCTestCase {
    private func yamlValue(_ text: String, section: String, key: String) -> String? {
        var inSection = false
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if !line.hasPrefix(" ") { inSection = line == "\(section):"; continue }
            let t = line.trimmingCharacters(in: .whitespaces)
            if inSection, t.hasPrefix(key + ":") { return t.dropFirst(key.count + 1).trimmingCharacters(in: .whitespaces) }
        }
        return nil
    }

    func testSweepSeedsWritesDistinctReplicatesPerArm() throws {
        try requireBinary()
        for (vary, initVaries, dataVaries) in [("both", true, true), ("init", true, false), ("data", false, true)] {
            let out = temporaryDirectory("seeds-\(vary)")
            defer { try? FileManager.default.removeItem(atPath: out) }
            let r = try runCommand(moeDist, ["sweep", "--phase", "1", "--base", tinyConfig, "--out", out, "--steps", "5",
                                             "--seeds", "3", "--vary", vary])
            XCTAssertEqual(r.status, 0, r.stderr)
            let lines = try String(contentsOfFile: out + "/phase-1/runs.txt", encoding: .utf8).split(separator: "\n").map(String.init)
            XCTAssertEqual(lines.count, 4 * 3, "4 arms x 3 seeds, one array line each")
            var arms: [String: [(seed: String, data: String)]] = [:]
            for path in lines {
                let text = try String(contentsOfFile: path, encoding: .utf8)
                let name = try XCTUnwrap(text.split(separator: "\n").first { $0.hasPrefix("name:") })
                let arm = String(name.dropFirst(5).trimmingCharacters(in: .whitespaces)).replacingOccurrences(
                    of: #"-s[0-9]+$"#, with: "", options: .regularExpression)
                arms[arm, default: []].append((yamlValue(text, section: "train", key: "seed") ?? "?",
                                               yamlValue(text, section: "train", key: "data_seed") ?? "?"))
            }
            XCTAssertEqual(arms.count, 4, "\(vary): \(arms.keys.sorted())")
            for (arm, reps) in arms {
                XCTAssertEqual(reps.count, 3, arm)
                XCTAssertEqual(Set(reps.map(\.seed)).count, initVaries ? 3 : 1, "\(vary) \(arm) init seeds \(reps)")
                XCTAssertEqual(Set(reps.map(\.data)).count, dataVaries ? 3 : 1, "\(vary) \(arm) data seeds \(reps)")
            }
        }
    }

    func testSweepSeedsRejectsZero() throws {
        try requireBinary()
        let r = try runCommand(moeDist, ["sweep", "--phase", "1", "--base", tinyConfig, "--out", temporaryDirectory("s0"), "--seeds", "0"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--seeds"), r.stderr)
    }
}

/// compare and gate on real replicate runs: arms, n, mean and sd against h5py's reading of the same histories.
final class ReplicateGroupingTests: XCTestCase {
    func testCompareAndGateGroupReplicatesIntoArms() throws {
        try requireBinary()
        let root = temporaryDirectory("arms")
        defer { try? FileManager.default.removeItem(atPath: root) }
        let sweep = try runCommand(moeDist, ["sweep", "--ablation", "balancing", "--base", tinyConfig, "--out", root,
                                             "--steps", "20", "--seeds", "2"])
        XCTAssertEqual(sweep.status, 0, sweep.stderr)
        let configs = try String(contentsOfFile: root + "/ablation-balancing/runs.txt", encoding: .utf8)
            .split(separator: "\n").map(String.init).filter { !$0.contains("deepseek") }   // 2 arms x 2 seeds
        var dirs: [String] = []
        for c in configs {
            let dir = root + "/runs/" + URL(fileURLWithPath: c).deletingPathExtension().lastPathComponent
            let r = try runCommand(moeDist, ["train", "--config", c, "--run-dir", dir, "train.eval_interval=10"])
            XCTAssertEqual(r.status, 0, r.stderr)
            dirs.append(dir)
        }
        let control = dirs.filter { $0.contains("aux0.01") }, bias = dirs.filter { $0.contains("bal-bias") }
        XCTAssertEqual(control.count, 2); XCTAssertEqual(bias.count, 2)

        let c = try runCommand(moeDist, ["compare", "--json"] + dirs + control.flatMap { ["--reference", $0] })
        XCTAssertEqual(c.status, 0, c.stderr)
        let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(c.stdout.utf8)) as? [String: Any])
        let arms = try XCTUnwrap(obj["arms"] as? [[String: Any]])
        XCTAssertEqual(arms.count, 2, "two arms of two replicates")
        let biasArm = try XCTUnwrap(arms.first { ($0["arm"] as? String) == "bal-bias" })
        XCTAssertEqual(biasArm["n"] as? Int, 2)
        let stat = try XCTUnwrap(biasArm["eval_loss_at_equal_steps"] as? [String: Any])
        // Independent: h5py reads the last eval loss of each replicate (both runs end at step 20).
        let out = try Python.run("""
        import sys, h5py, numpy as np
        def last(d): return h5py.File(d + "/metrics.h5", "r", locking=False)["eval/loss"][-1]
        a = np.array([last(d) for d in sys.argv[1:3]]); b = np.array([last(d) for d in sys.argv[3:5]])
        pooled = (a.var(ddof=1) + b.var(ddof=1)) / 2
        print(a.mean(), a.std(ddof=1), a.mean() - b.mean(), np.sqrt(pooled / 2 + pooled / 2))
        """, bias + control).split(separator: " ").map { Double($0.trimmingCharacters(in: .whitespacesAndNewlines))! }
        XCTAssertEqual(stat["mean"] as? Double ?? .nan, out[0], accuracy: 1e-9)
        XCTAssertEqual(stat["sd"] as? Double ?? .nan, out[1], accuracy: 1e-9)
        XCTAssertEqual(stat["difference_to_reference"] as? Double ?? .nan, out[2], accuracy: 1e-9)
        XCTAssertEqual(stat["difference_standard_error"] as? Double ?? .nan, out[3], accuracy: 1e-9)

        let g = try runCommand(moeDist, ["gate", "--json"] + bias + control.flatMap { ["--reference", $0] })
        XCTAssertEqual(g.status, 0, g.stderr)
        let gate = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(g.stdout.utf8)) as? [String: Any])
        let rows = try XCTUnwrap(gate["runs"] as? [[String: Any]])
        XCTAssertEqual(rows.count, 2)
        XCTAssertEqual(Set(rows.map { $0["decision"] as? String ?? "" }).count, 1, "one decision per arm")
        XCTAssertEqual(rows.first?["replicates"] as? Int, 2)
        XCTAssertEqual(rows.first?["reference_replicates"] as? Int, 2)
        let noise = try XCTUnwrap(rows.first?["noise"] as? [String: Any])
        XCTAssertEqual(noise["standard_error"] as? Double ?? .nan, out[3], accuracy: 1e-9)
        XCTAssertEqual(noise["noise_floor"] as? Double ?? .nan, 2 * out[3], accuracy: 1e-9)
        XCTAssertNotNil(rows.first?["decided_by"] as? String)
    }
}

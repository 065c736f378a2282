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

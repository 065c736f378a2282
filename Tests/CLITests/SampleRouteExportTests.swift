// `sample`, `route` and `export` end to end: what they refuse and with which exit status
// (docs/exit-status.md), and that sampling and export work from a checkpoint written by 2 ranks.
// scripts/test_export.sh checks their numbers against PyTorch.
import XCTest
import TestSupport

final class SampleRouteExportTests: XCTestCase {
    /// A tiny run on a small text with its own tokenizer, at `ranks` ranks (threads); returns (dir, checkpoint).
    private func tinyTextRun(ranks: Int = 1, extra: [String] = []) throws -> (String, String) {
        let dir = temporaryDirectory("sample")
        let words = ["the", "old", "king", "city", "river", "saw", "built", "a", "of", "new"]
        var text = ""
        for i in 0 ..< 600 { text += " " + (0 ..< 6).map { words[($0 * 7 + i * 3 + $0 * i) % words.count] }.joined(separator: " ") + " .\n" }
        try text.write(toFile: dir + "/t.txt", atomically: true, encoding: .utf8)
        let prep = try runCommand(moeDist, ["data", "prepare", "--train", dir + "/t.txt", "--valid", dir + "/t.txt",
                                            "--vocab-size", "300", "--out", dir + "/data"])
        XCTAssertEqual(prep.status, 0, prep.stderr)
        let train = try runCommand(moeDist, ["train", "--config", tinyConfig, "--run-dir", dir + "/run", "--emulate-ranks", "\(ranks)",
                                             "train.max_steps=4", "train.checkpoint_interval=4", "train.eval_interval=4",
                                             "data.train=\(dir)/data/train.tok", "data.valid=\(dir)/data/valid.tok",
                                             "data.tokenizer=\(dir)/data/tokenizer.json"] + extra)
        XCTAssertEqual(train.status, 0, train.stderr)
        return (dir, dir + "/run/checkpoints/step-00000004.h5")
    }

    func testSampleFromATwoRankCheckpointIsDeterministicAndStreamsText() throws {
        try requireBinary()
        let (_, ck) = try tinyTextRun(ranks: 2)
        let args = ["sample", "--checkpoint", ck, "--prompt", " the old king", "--max-new-tokens", "40", "--temperature", "0"]
        let a = try runCommand(moeDist, args), b = try runCommand(moeDist, args + ["--seed", "9"])
        XCTAssertEqual(a.status, 0, a.stderr)
        XCTAssertTrue(a.stdout.hasPrefix(" the old king"), a.stdout)
        XCTAssertEqual(a.stdout, b.stdout, "greedy ignores the seed")
        XCTAssertTrue(a.stderr.contains("40 new tokens"), a.stderr)
        // The cache changes no token (40 tokens at seq_len 16: the window slides).
        let c = try runCommand(moeDist, args + ["--no-cache"])
        XCTAssertEqual(a.stdout, c.stdout)
        // Seeded sampling: the same seed gives the same text, --count draws seed, seed+1, ...
        let s = ["sample", "--checkpoint", ck, "--prompt", " the", "--max-new-tokens", "20", "--top-k", "20", "--top-p", "0.9", "--json"]
        let one = try runCommand(moeDist, s + ["--seed", "5", "--count", "2"]), two = try runCommand(moeDist, s + ["--seed", "6"])
        func ids(_ line: Substring) throws -> [Int] {
            (try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any])["ids"] as! [Int]
        }
        let lines = one.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, 2, one.stdout + one.stderr)
        XCTAssertEqual(try ids(lines[1]), try ids(two.stdout.split(separator: "\n")[0]), "sample 2 of seed 5 is seed 6")
        XCTAssertNotEqual(try ids(lines[0]), try ids(lines[1]))
    }

    func testRefusals() throws {
        try requireBinary()
        let (dir, ck) = try tinyTextRun()
        // A tokenizer of another vocabulary: bad data (3), naming it.
        let other = temporaryDirectory("other")
        try String(repeating: " zebra yak xylophone quartz .\n", count: 50).write(toFile: other + "/t.txt", atomically: true, encoding: .utf8)
        XCTAssertEqual(try runCommand(moeDist, ["data", "prepare", "--train", other + "/t.txt", "--valid", other + "/t.txt",
                                                "--vocab-size", "280", "--out", other]).status, 0)
        for cmd in [["sample", "--prompt", " the"], ["route", "--text", " the"], ["export", "--out", other + "/x"]] {
            let r = try runCommand(moeDist, cmd + ["--checkpoint", ck, "--tokenizer", other + "/tokenizer.json"])
            XCTAssertEqual(r.status, 3, "\(cmd): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(other + "/tokenizer.json"), r.stderr)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: other + "/x"))
        // A missing checkpoint: bad data (3).
        for cmd in [["sample", "--prompt", "x"], ["route", "--text", "x"], ["export", "--out", dir + "/y"]] {
            XCTAssertEqual(try runCommand(moeDist, cmd + ["--checkpoint", dir + "/nope.h5"]).status, 3, "\(cmd)")
        }
        // Usage errors (2): both prompts, a text longer than seq_len, top-p out of range, a dense model's routing.
        XCTAssertEqual(try runCommand(moeDist, ["sample", "--checkpoint", ck, "--prompt", "a", "--prompt-file", "b"]).status, 2)
        XCTAssertEqual(try runCommand(moeDist, ["sample", "--checkpoint", ck, "--prompt", "a", "--top-p", "0"]).status, 2)
        let long = try runCommand(moeDist, ["route", "--checkpoint", ck, "--text", String(repeating: " the king", count: 20)])
        XCTAssertEqual(long.status, 2, long.stderr)
        XCTAssertTrue(long.stderr.contains("model.seq_len"), long.stderr)
        let (_, dense) = try tinyTextRun(extra: ["moe.num_experts=0"])
        let r = try runCommand(moeDist, ["route", "--checkpoint", dense, "--text", " the"])
        XCTAssertEqual(r.status, 2, r.stderr)
        // A prompt longer than seq_len is cut to its last seq_len tokens, with a warning.
        let p = try runCommand(moeDist, ["sample", "--checkpoint", ck, "--prompt", String(repeating: " the king", count: 20),
                                         "--max-new-tokens", "3", "--temperature", "0"])
        XCTAssertEqual(p.status, 0, p.stderr)
        XCTAssertTrue(p.stderr.contains("warning: the prompt has"), p.stderr)
    }

    func testRouteTableJSONAndH5Agree() throws {
        try requireBinary()
        let (dir, ck) = try tinyTextRun(extra: ["moe.capacity_factor=0.5"])
        let args = ["route", "--checkpoint", ck, "--data", dir + "/data/valid.tok", "--offset", "3", "--count", "16"]
        let table = try runCommand(moeDist, args), json = try runCommand(moeDist, args + ["--json", "--h5", dir + "/r/route.h5"])
        XCTAssertEqual(table.status, 0, table.stderr)
        XCTAssertEqual(json.status, 0, json.stderr)
        let obj = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as! [String: Any]
        let experts = obj["experts"] as! [[[Int]]], dropped = obj["dropped"] as! [[[Bool]]]
        XCTAssertEqual(experts.count, 2)
        XCTAssertEqual(experts[0].count, 16)
        // capacity 0.5: ceil(0.5·2·16/8) = 2 per expert, 32 assignments: at least 16 dropped per iteration
        for r in 0 ..< 2 { XCTAssertGreaterThanOrEqual(dropped[r].flatMap { $0 }.filter { $0 }.count, 16) }
        let drops = dropped.flatMap { $0 }.flatMap { $0 }.filter { $0 }.count
        XCTAssertTrue(table.stdout.contains("dropped assignments: \(drops) of 64"), table.stdout)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/r/route.h5"))
    }
}

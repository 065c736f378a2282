// `moe-dist data ...` end to end through the built binary (TestPaths.binary).
import DataPipeline
import Foundation
import TestSupport
import XCTest

final class DataCommandTests: XCTestCase {
    struct Result { var status: Int32; var stdout: Data; var stderr: String }

    func run(_ args: [String]) throws -> Result {
        guard FileManager.default.isExecutableFile(atPath: TestPaths.binary) else {
            throw missingTool("moe-dist binary not built at \(TestPaths.binary)")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: TestPaths.binary)
        p.arguments = args
        let outPath = FileManager.default.temporaryDirectory.appendingPathComponent("moe-dist-stdout-\(UUID().uuidString)").path
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: outPath) }
        let out = FileHandle(forWritingAtPath: outPath)!, err = Pipe()
        p.standardOutput = out; p.standardError = err
        try p.run()
        let errData = err.fileHandleForReading.readDataToEndOfFile()   // stderr is short; stdout goes to a file
        p.waitUntilExit()
        try out.close()
        let outData = try Data(contentsOf: URL(fileURLWithPath: outPath))
        return Result(status: p.terminationStatus, stdout: outData, stderr: String(decoding: errData, as: UTF8.self))
    }

    /// Non-zero exit and exactly one stderr line mentioning the file and the problem.
    func assertFails(_ args: [String], mentions path: String, _ problem: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let r = try run(args)
        XCTAssertNotEqual(r.status, 0, "exit status", file: file, line: line)
        let lines = r.stderr.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, "stderr: \(r.stderr)", file: file, line: line)
        XCTAssertTrue(r.stderr.contains(path) && r.stderr.contains(problem), "stderr: \(r.stderr)", file: file, line: line)
    }

    func testPrepareEncodeDecodeInspect() throws {
        let dir = try scratchDirectory(self)
        let text = dir.appendingPathComponent("small.txt").path
        try (try TokenizerParityTests.trainSlice(bytes: 100_000)).write(toFile: text, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("prepared").path
        let r = try run(["data", "prepare", "--train", text, "--valid", text, "--test", text, "--vocab-size", "400", "--out", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        for f in ["tokenizer.json", "train.tok", "valid.tok", "test.tok"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/" + f), f)
        }
        let tokens = try TokenFile(path: out + "/valid.tok")
        XCTAssertEqual(tokens.vocabSize, 400)
        XCTAssertEqual(tokens.bytesPerToken, 2)

        let enc = dir.appendingPathComponent("again.tok").path
        XCTAssertEqual(try run(["data", "encode", "--tokenizer", out + "/tokenizer.json", "--input", text, "--out", enc]).status, 0)
        XCTAssertEqual(try TokenFile(path: enc).tokens(0 ..< tokens.count), tokens.tokens(0 ..< tokens.count))
        let dec = try run(["data", "decode", "--tokenizer", out + "/tokenizer.json", "--input", enc])
        XCTAssertEqual(dec.status, 0)
        XCTAssertEqual(dec.stdout, try Data(contentsOf: URL(fileURLWithPath: text)))
        let ins = try run(["data", "inspect", enc, "--tokenizer", out + "/tokenizer.json", "--top", "3"])
        XCTAssertEqual(ins.status, 0)
        let report = String(decoding: ins.stdout, as: UTF8.self)
        XCTAssertTrue(report.contains("tokens:          \(tokens.count)") && report.contains("vocabulary size: 400"), report)
        // The id table has a header row naming its columns, then --top rows.
        let lines = report.split(separator: "\n").map(String.init)
        let header = try XCTUnwrap(lines.firstIndex { $0.split(separator: " ") == ["id", "count", "share", "text"] }, report)
        XCTAssertEqual(lines.count - header - 1, 3, report)
    }

    func testBadInputs() throws {
        let dir = try scratchDirectory(self)
        let text = dir.appendingPathComponent("t.txt").path
        try "some text for a tokenizer".write(toFile: text, atomically: true, encoding: .utf8)
        let empty = dir.appendingPathComponent("empty.txt").path
        _ = FileManager.default.createFile(atPath: empty, contents: Data())
        let missing = dir.appendingPathComponent("nope.txt").path
        let out = dir.appendingPathComponent("out").path

        try assertFails(["data", "prepare", "--train", missing, "--valid", text, "--vocab-size", "300", "--out", out], mentions: missing, "does not exist")
        try assertFails(["data", "prepare", "--train", text, "--valid", empty, "--vocab-size", "300", "--out", out], mentions: empty, "empty")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/tokenizer.json"))
        let v = try run(["data", "prepare", "--train", text, "--valid", text, "--vocab-size", "100", "--out", out])
        XCTAssertNotEqual(v.status, 0)
        XCTAssertTrue(v.stderr.contains("--vocab-size"), v.stderr)

        XCTAssertEqual(try run(["data", "prepare", "--train", text, "--valid", text, "--vocab-size", "300", "--out", out]).status, 0)
        let tokJSON = out + "/tokenizer.json"
        let notJSON = dir.appendingPathComponent("bad.json").path
        try "{ nope".write(toFile: notJSON, atomically: true, encoding: .utf8)
        let dest = dir.appendingPathComponent("x.tok").path
        try assertFails(["data", "encode", "--tokenizer", notJSON, "--input", text, "--out", dest], mentions: notJSON, "not valid JSON")
        try assertFails(["data", "encode", "--tokenizer", tokJSON, "--input", empty, "--out", dest], mentions: empty, "empty")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dest))

        let badMagic = dir.appendingPathComponent("magic.tok").path
        try Data(repeating: 0x41, count: 100).write(to: URL(fileURLWithPath: badMagic))
        try assertFails(["data", "decode", "--tokenizer", tokJSON, "--input", badMagic], mentions: badMagic, "magic")
        try assertFails(["data", "inspect", badMagic], mentions: badMagic, "magic")
        var h = TokenFileHeader(count: 2, vocabSize: 300).bytes + [1, 0, 0x2C, 0x01]   // second id = 300
        let badId = dir.appendingPathComponent("id.tok").path
        try Data(h).write(to: URL(fileURLWithPath: badId))
        try assertFails(["data", "inspect", badId], mentions: badId, "token 1 has id 300")
        h = TokenFileHeader(count: 3, vocabSize: 300).bytes + [1, 0]
        try Data(h).write(to: URL(fileURLWithPath: badId))
        try assertFails(["data", "decode", "--tokenizer", tokJSON, "--input", badId], mentions: badId, "size mismatch")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains("partial") }
            + (try FileManager.default.contentsOfDirectory(atPath: out)).filter { $0.contains("partial") }
        XCTAssertEqual(leftovers, [])
    }
}

/// Text that is not UTF-8: `data prepare` and `data encode` warn with the file and the offset of the first
/// invalid sequence (Python's decoder, an independent implementation, gives the offset and the count of
/// maximal subparts it replaces), and the bytes still round-trip.
extension DataCommandTests {
    /// Python's view of a file: (offset of the first undecodable byte or -1, number of U+FFFD replacements).
    func pythonFindings(_ paths: [String]) throws -> [(Int64, Int)] {
        let out = try Python.run("""
            import codecs, sys
            for p in sys.argv[1:]:
                data = open(p, "rb").read()
                hits = []
                def count(e):
                    hits.append(e.start)
                    return ("\\ufffd", e.end)
                codecs.register_error("count", count)
                data.decode("utf-8", errors="count")
                print(hits[0] if hits else -1, len(hits))
            """, paths)
        return out.split(separator: "\n").map { line in
            let f = line.split(separator: " ")
            return (Int64(f[0])!, Int(f[1])!)
        }
    }

    func testValidatorAgreesWithPythonAcrossChunkBoundaries() throws {
        let dir = try scratchDirectory(self)
        var rng = SplitMix64(seed: 11)
        // Valid text with invalid bytes, overlongs, surrogates, > U+10FFFF and cut sequences spliced in.
        let pieces: [[UInt8]] = [Array("plain ascii ".utf8), Array("é中👍 ".utf8), [0xFF], [0xC0, 0xAF], [0xED, 0xA0, 0x80],
                                 [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82], [0xF0, 0x9F, 0x91], [0x80, 0xBF], [0xE0, 0x80, 0x80]]
        var paths: [String] = [], found: [UTF8Validation.Finding?] = []
        for k in 0 ..< 40 {
            var bytes: [UInt8] = []
            for _ in 0 ..< Int(rng.next() % 40) {
                let p = Int(rng.next() % UInt64(pieces.count))
                bytes += (p < 2 || rng.next() % 3 == 0) ? pieces[p % 2] : pieces[p]
            }
            let path = dir.appendingPathComponent("f\(k).txt").path
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            paths.append(path)
            found.append(try UTF8Validation.check(path: path, chunkSize: 1 + Int(rng.next() % 7)))   // sequences cut by chunks
        }
        let python = try pythonFindings(paths)
        for (i, (ours, theirs)) in zip(found, python).enumerated() {
            XCTAssertEqual(ours?.firstOffset ?? -1, theirs.0, "file \(i) first offset")
            XCTAssertEqual(ours?.invalidSequences ?? 0, theirs.1, "file \(i) count")
        }
        XCTAssertTrue(found.contains { $0 != nil }, "the generated files hold invalid UTF-8")
    }

    func testPrepareAndEncodeWarnWithFileAndOffset() throws {
        let dir = try scratchDirectory(self)
        let good = dir.appendingPathComponent("good.txt").path
        try String(repeating: "valid text for the tokenizer, ", count: 50).write(toFile: good, atomically: true, encoding: .utf8)
        let bad = dir.appendingPathComponent("latin1.txt").path
        var bytes = Array(String(repeating: "caf", count: 40).utf8)
        bytes.insert(0xE9, at: 37)      // "é" in Latin-1
        bytes += [0xFF, 0x0A]
        try Data(bytes).write(to: URL(fileURLWithPath: bad))
        let out = dir.appendingPathComponent("p").path
        let r = try run(["data", "prepare", "--train", bad, "--valid", good, "--vocab-size", "300", "--out", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stderr.contains("warning: \(bad) is not valid UTF-8: 2 invalid byte sequence(s), the first at byte offset 37"),
                      r.stderr)
        XCTAssertFalse(r.stderr.contains("\(good) is not valid"), r.stderr)
        let tok = dir.appendingPathComponent("bad.tok").path
        let e = try run(["data", "encode", "--tokenizer", out + "/tokenizer.json", "--input", bad, "--out", tok])
        XCTAssertEqual(e.status, 0, e.stderr)
        XCTAssertTrue(e.stderr.contains("\(bad) is not valid UTF-8") && e.stderr.contains("byte offset 37"), e.stderr)
        let d = try run(["data", "decode", "--tokenizer", out + "/tokenizer.json", "--input", tok])
        XCTAssertEqual(d.stdout, Data(bytes), "the bytes come back unchanged")
    }
}

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

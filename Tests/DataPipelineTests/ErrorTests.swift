// Every bad input gives one DataFileError naming the file and the problem, and
// nothing half-written is left under an output name.
import DataPipeline
import Foundation
import XCTest

final class ErrorTests: XCTestCase {
    func assertError(_ expr: @autoclosure () throws -> Any, path: String, contains needle: String,
                     file: StaticString = #filePath, line: UInt = #line) {
        do {
            _ = try expr()
            XCTFail("no error; expected \"\(needle)\"", file: file, line: line)
        } catch let e as DataFileError {
            XCTAssertEqual(e.path, path, file: file, line: line)
            XCTAssertTrue(e.description.contains(needle), "message \"\(e)\" lacks \"\(needle)\"", file: file, line: line)
            XCTAssertFalse(e.description.contains("\n"), "message is not one line: \(e)", file: file, line: line)
        } catch {
            XCTFail("unexpected error type: \(error)", file: file, line: line)
        }
    }

    /// A valid 2-byte token file with ids 0..<10 and vocabulary 16, as bytes.
    func goodFile() -> [UInt8] {
        var d = TokenFileHeader(count: 10, vocabSize: 16).bytes
        for i in 0 ..< 10 { d += [UInt8(i), 0] }
        return d
    }

    func write(_ bytes: [UInt8], _ name: String, in dir: URL) throws -> String {
        let p = dir.appendingPathComponent(name).path
        try Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }

    func testBadTokenFiles() throws {
        let dir = try scratchDirectory(self)
        XCTAssertNoThrow(try TokenFile(path: try write(goodFile(), "good.tok", in: dir)).validate())

        var magic = goodFile(); magic[0] = UInt8(ascii: "X")
        assertError(try TokenFile(path: try write(magic, "magic.tok", in: dir)), path: dir.path + "/magic.tok", contains: "magic is not MOETOKS1")
        var version = goodFile(); version[8] = 2
        assertError(try TokenFile(path: try write(version, "version.tok", in: dir)), path: dir.path + "/version.tok", contains: "unsupported token file version 2")
        var bpt = goodFile(); bpt[12] = 3
        assertError(try TokenFile(path: try write(bpt, "bpt.tok", in: dir)), path: dir.path + "/bpt.tok", contains: "bytes per token 3")
        let short = Array(goodFile().dropLast(1))
        assertError(try TokenFile(path: try write(short, "short.tok", in: dir)), path: dir.path + "/short.tok", contains: "size mismatch")
        let long = goodFile() + [0, 0]
        assertError(try TokenFile(path: try write(long, "long.tok", in: dir)), path: dir.path + "/long.tok", contains: "size mismatch")
        var huge = goodFile(); huge[23] = 0x80                    // count near 2^63
        assertError(try TokenFile(path: try write(huge, "huge.tok", in: dir)), path: dir.path + "/huge.tok", contains: "size mismatch")
        assertError(try TokenFile(path: try write(Array("hello".utf8), "tiny.tok", in: dir)), path: dir.path + "/tiny.tok", contains: "shorter than the 64-byte header")
        var badId = goodFile(); badId[64 + 2 * 7] = 16
        let idPath = try write(badId, "id.tok", in: dir)
        assertError(try TokenFile(path: idPath), path: idPath, contains: "token 7 has id 16, not below the vocabulary size 16")
        assertError(try TokenFile(path: idPath), path: idPath, contains: "(byte offset 78)")
        let f = try TokenFile(path: idPath, checkIDs: false)
        assertError(try f.validate(), path: idPath, contains: "token 7 has id 16, not below the vocabulary size 16")
        assertError(try TokenFile(path: dir.path + "/missing.tok"), path: dir.path + "/missing.tok", contains: "cannot open token file")
    }

    /// Opening checks ids block by block (blocks of 65536): the first bad id is found wherever it sits, in
    /// 2- and 4-byte files, against a scalar scan of the same ids.
    func testOpeningFindsTheFirstBadIdAcrossBlocks() throws {
        let dir = try scratchDirectory(self)
        for (vocab, bad) in [(1000, [65535, 65536, 70000]), (100_000, [0, 131_071]), (70_000, [199_999])] {
            var ids = (0 ..< 200_000).map { Int32($0 % vocab) }
            XCTAssertNoThrow(try { () throws -> Void in
                let w = try TokenFileWriter(path: dir.path + "/ok.tok", vocabSize: vocab); try w.append(ids); try w.finish()
                _ = try TokenFile(path: dir.path + "/ok.tok")
            }())
            for p in bad { ids[p] = Int32(vocab + p % 7) }
            let path = dir.path + "/bad-\(vocab).tok"
            var bytes = TokenFileHeader(count: ids.count, vocabSize: vocab).bytes
            let wide = vocab > 65536
            for id in ids {
                let u = UInt32(bitPattern: id)
                bytes += wide ? [UInt8(u & 0xff), UInt8((u >> 8) & 0xff), UInt8((u >> 16) & 0xff), UInt8(u >> 24)]
                              : [UInt8(u & 0xff), UInt8(u >> 8)]
            }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let first = ids.firstIndex { $0 >= vocab }!
            assertError(try TokenFile(path: path), path: path, contains: "token \(first) has id \(ids[first]), not below the vocabulary size \(vocab)")
        }
    }

    func testWriterRejectsBadIdsAndLeavesNothing() throws {
        let dir = try scratchDirectory(self)
        let path = dir.appendingPathComponent("out.tok").path
        do {
            let w = try TokenFileWriter(path: path, vocabSize: 100)
            try w.append([1, 2, 3])
            assertError(try w.append([4, 100]), path: path, contains: "token 4 has id 100")
            assertError(try w.append([-1]), path: path, contains: "has id -1")
            w.abort()
        }
        do {
            let w = try TokenFileWriter(path: path, vocabSize: 100)
            try w.append([1, 2, 3])
            _ = w                                                   // dropped without finish()
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), [])
    }

    func testBadTokenizerFiles() throws {
        let dir = try scratchDirectory(self)
        func json(_ text: String, _ name: String) throws -> String {
            let p = dir.appendingPathComponent(name).path
            try text.write(toFile: p, atomically: true, encoding: .utf8)
            return p
        }
        var p = try json("this is not json {", "text.json")
        assertError(try BPETokenizer(contentsOf: p), path: p, contains: "not valid JSON")
        p = try json("[1, 2, 3]", "array.json")
        assertError(try BPETokenizer(contentsOf: p), path: p, contains: "top level is not a JSON object")
        p = try json(#"{"model": {"type": "WordPiece", "vocab": {"a": 0}}, "pre_tokenizer": {"type": "BertPreTokenizer"}}"#, "wordpiece.json")
        assertError(try BPETokenizer(contentsOf: p), path: p, contains: "model type is WordPiece, not BPE")
        p = try json(#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "Metaspace"}}"#, "metaspace.json")
        assertError(try BPETokenizer(contentsOf: p), path: p, contains: "pre_tokenizer is Metaspace, not ByteLevel")
        p = try json(#"{"model": {"type": "BPE", "vocab": {"a": 0, "▁b": 1}, "merges": []}, "pre_tokenizer": {"type": "ByteLevel"}}"#, "notbytes.json")
        assertError(try BPETokenizer(contentsOf: p), path: p, contains: "outside the byte-level alphabet")
        p = try json(#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "pre_tokenizer": {"type": "ByteLevel"}}"#, "fewbytes.json")
        assertError(try BPETokenizer(contentsOf: p), path: p, contains: "no token for byte")
        p = try json("", "empty.json")
        assertError(try BPETokenizer(contentsOf: p), path: p, contains: "tokenizer file is empty")
        p = dir.appendingPathComponent("missing.json").path
        assertError(try BPETokenizer(contentsOf: p), path: p, contains: "does not exist")
    }

    func testMissingOrEmptyTextInput() throws {
        let dir = try scratchDirectory(self)
        let tok = try BPETrainer(vocabSize: 300).train(text: "hello hello world")
        let missing = dir.appendingPathComponent("missing.txt").path
        let empty = dir.appendingPathComponent("empty.txt").path
        _ = FileManager.default.createFile(atPath: empty, contents: Data())
        let out = dir.appendingPathComponent("out.tok").path
        assertError(try tok.encodeFile(input: missing, output: out), path: missing, contains: "cannot open input")
        assertError(try tok.encodeFile(input: empty, output: out), path: empty, contains: "input file is empty")
        assertError(try BPETrainer(vocabSize: 300).train(files: [missing]), path: missing, contains: "does not exist")
        assertError(try BPETrainer(vocabSize: 300).train(files: [empty]), path: empty, contains: "input file is empty")
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["empty.txt"])
    }
}

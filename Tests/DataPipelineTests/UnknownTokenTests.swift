// WikiText's `<unk>` as one special token in `moe-dist data prepare` (SPEC section 8), against Hugging Face
// `tokenizers` (scripts/hf_tokenize.py) as the independent reference:
// - the tokenizer learned from a WikiText-2 train slice has " <unk>" (with the space before it) in
//   added_tokens, and the whole WikiText-2 test split (or the committed excerpt's) encodes to exactly HF's ids, with one id per <unk>;
// - odd Unicode (combining marks, astral letters, ZWJ emoji, RTL, CJK, tabs, <unk> without a space or
//   doubled) gives HF's ids too, and every file decodes back to its bytes (data decode);
// - --special-token adds a literal token that is one id.
import DataPipeline
import Foundation
import TestSupport
import XCTest

final class UnknownTokenTests: XCTestCase {
    private func moeDist(_ args: [String]) throws -> (status: Int32, stdout: Data, stderr: String) {
        guard FileManager.default.isExecutableFile(atPath: TestPaths.binary) else {
            throw missingTool("moe-dist binary not built at \(TestPaths.binary)")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: TestPaths.binary)
        p.arguments = args
        let outPath = NSTemporaryDirectory() + "moe-dist-unk-\(UUID().uuidString)"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: outPath) }
        let out = FileHandle(forWritingAtPath: outPath)!, err = Pipe()
        p.standardOutput = out; p.standardError = err
        try p.run()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        try out.close()
        return (p.terminationStatus, try Data(contentsOf: URL(fileURLWithPath: outPath)), String(decoding: errData, as: UTF8.self))
    }

    static let oddText = "<unk> at the start, x<unk>y,  <unk> after two spaces, \t<unk>\n<unk>\n é́ 𝔘𝔫𝔦 👩‍👩‍👧 ﷽ עברית "
        + "中文<unk> <unk><unk> < unk> <unk > \u{0085}<unk>\u{00A0}<unk> <unk>\r\n"

    func testUnknownIsOneSpecialTokenMatchingHFAndRoundTripping() throws {
        let dir = try scratchDirectory(self)
        let trainSlice = dir.appendingPathComponent("train-slice.txt").path
        try Data(contentsOf: URL(fileURLWithPath: try TestPaths.wikitext2File("wiki.train.tokens"))).prefix(300_000)
            .write(to: URL(fileURLWithPath: trainSlice))
        let out = dir.appendingPathComponent("prepared").path
        let test = try TestPaths.wikitext2File("wiki.test.tokens")
        let r = try moeDist(["data", "prepare", "--train", trainSlice, "--valid", test, "--test", test,
                             "--vocab-size", "800", "--special-token", "<pad>", "--out", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let tok = try BPETokenizer(contentsOf: out + "/tokenizer.json")
        XCTAssertEqual(tok.specialTokens.map(\.content), ["<pad>", " <unk>", "<|endoftext|>"])
        XCTAssertEqual(tok.vocabSize, 800)
        let unk = try XCTUnwrap(tok.specialTokenId(" <unk>"))
        XCTAssertEqual(unk, 798)

        // The whole test split: HF's ids, one id per <unk>, and decode gives the bytes back.
        let text = try Data(contentsOf: URL(fileURLWithPath: test))
        let file = try TokenFile(path: out + "/test.tok")
        let ours = file.tokens(0 ..< file.count)
        let hf = try HFReference.encodeFile(tokenizer: out + "/tokenizer.json", text: test, scratch: dir)
        XCTAssertEqual(ours.count, hf.count)
        XCTAssertTrue(ours == hf, firstDifference(ours, hf))
        let markers = String(decoding: text, as: UTF8.self).components(separatedBy: "<unk>").count - 1
        // Counts from Tests/Fixtures/wikitext-2-excerpt/SOURCE.md (grep -o '<unk>' | wc -l): the right file was read.
        XCTAssertEqual(markers, TestPaths.wikitext2IsWhole ? 15218 : 600, "<unk> markers in \(test)")
        XCTAssertEqual(ours.filter { $0 == unk }.count, markers, "each <unk> is one id")
        let decoded = try moeDist(["data", "decode", "--tokenizer", out + "/tokenizer.json", "--input", out + "/test.tok"])
        XCTAssertEqual(decoded.status, 0, decoded.stderr)
        XCTAssertTrue(decoded.stdout == text, "decode(encode(test split)) == test split")

        // Odd Unicode, <unk> in odd places, and the extra special token.
        let odd = dir.appendingPathComponent("odd.txt").path
        let oddText = Self.oddText + "a<pad>b <pad>\n"
        try oddText.write(toFile: odd, atomically: true, encoding: .utf8)
        let oddTok = dir.appendingPathComponent("odd.tok").path
        XCTAssertEqual(try moeDist(["data", "encode", "--tokenizer", out + "/tokenizer.json", "--input", odd, "--out", oddTok]).status, 0)
        let oddFile = try TokenFile(path: oddTok)
        let oddOurs = oddFile.tokens(0 ..< oddFile.count)
        let oddHF = try HFReference.encodeFile(tokenizer: out + "/tokenizer.json", text: odd, scratch: dir)
        XCTAssertTrue(oddOurs == oddHF, firstDifference(oddOurs, oddHF))
        XCTAssertEqual(oddOurs.filter { $0 == tok.specialTokenId("<pad>")! }.count, 2)
        XCTAssertEqual(oddOurs.filter { $0 == unk }.count, oddText.components(separatedBy: " <unk>").count - 1)
        let oddBack = try moeDist(["data", "decode", "--tokenizer", out + "/tokenizer.json", "--input", oddTok])
        XCTAssertEqual(oddBack.stdout, Data(oddText.utf8))
    }

    func testNoUnknownTokenWithoutMarkerAndBadSpecialTokens() throws {
        let dir = try scratchDirectory(self)
        let text = dir.appendingPathComponent("plain.txt").path
        try String(repeating: "plain text without the marker. ", count: 200).write(toFile: text, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("p").path
        XCTAssertEqual(try moeDist(["data", "prepare", "--train", text, "--valid", text, "--vocab-size", "280", "--out", out]).status, 0)
        XCTAssertEqual(try BPETokenizer(contentsOf: out + "/tokenizer.json").specialTokens.map(\.content), ["<|endoftext|>"])
        XCTAssertEqual(try moeDist(["data", "prepare", "--train", text, "--valid", text, "--vocab-size", "280",
                                    "--special-token", "", "--out", out]).status, 2)
    }
}

// decode(encode(x)) == x for arbitrary UTF-8, and streaming equals in-memory.
import DataPipeline
import Foundation
import XCTest

final class RoundTripTests: XCTestCase {
    /// Learned once for the whole class; a failure (a missing text file) fails each test with its message.
    static let trained = Result {
        try BPETrainer(vocabSize: 800).train(text: try TokenizerParityTests.trainSlice(bytes: 300_000) + TokenizerParityTests.sampleTexts.joined())
    }
    var tokenizer: BPETokenizer!

    override func setUpWithError() throws { tokenizer = try Self.trained.get() }

    func assertRoundTrip(_ s: String, file: StaticString = #filePath, line: UInt = #line) {
        let ids = tokenizer.encode(s)
        XCTAssertEqual(tokenizer.decode(ids), Array(s.utf8), "round trip of \(s.debugDescription)", file: file, line: line)
        XCTAssertTrue(ids.allSatisfy { $0 >= 0 && Int($0) < tokenizer.vocabSize })
    }

    func testFixedStrings() {
        for s in TokenizerParityTests.sampleTexts { assertRoundTrip(s) }
        assertRoundTrip(String(repeating: " ", count: 5000) + "x" + String(repeating: "\n", count: 3000))
        assertRoundTrip(String(repeating: "\t \n\u{3000}", count: 1000))
        assertRoundTrip(String(repeating: "a", count: 20_000))                  // one long pre-token
        assertRoundTrip("日本語のテキスト、中文文本，한국어 텍스트")
        assertRoundTrip("e\u{301}\u{302}\u{303}\u{304} o\u{308}\u{331}")
        assertRoundTrip("👩🏽‍🚀🏳️‍🌈🧑‍🤝‍🧑")
        assertRoundTrip("\u{0}\u{1}\u{2}\u{7f}\u{80}\u{9f}\u{ad}\u{feff}\u{fffd}\u{10ffff}")
        assertRoundTrip("<|endoftext|>")
        assertRoundTrip("x<|endoftext|>y<|endoftext")
    }

    func testRandomValidUTF8() {
        var rng = SplitMix64(seed: 7)
        for _ in 0 ..< 2000 { assertRoundTrip(randomText(&rng, length: Int(rng.next() % 200))) }
    }

    /// Bytes that are not UTF-8 also come back unchanged (each counts as one "other" character).
    func testInvalidUTF8Bytes() {
        var rng = SplitMix64(seed: 9)
        for _ in 0 ..< 500 {
            let bytes = (0 ..< Int(rng.next() % 100)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            var ids: [Int32] = []
            bytes.withUnsafeBufferPointer { tokenizer.encode(bytes: $0, into: &ids) }
            XCTAssertEqual(tokenizer.decode(ids), bytes)
        }
    }

    /// The file encoder works in windows and the trainer in chunks; both must agree
    /// with whole-text processing whatever the boundaries cut (runs, contractions,
    /// multi-byte characters, special tokens).
    func testChunkedTrainingAndFileEncodingMatchInMemory() throws {
        let dir = try scratchDirectory(self)
        var rng = SplitMix64(seed: 3)
        var text = ""
        for i in 0 ..< 400 {
            text += randomText(&rng, length: Int(rng.next() % 80))
            text += ["'s", "'ll", " 've", "<|endoftext|>", "   ", "\n\n", "日本", " x"][i % 8]
        }
        text += try TokenizerParityTests.trainSlice(bytes: 50_000)
        let path = dir.appendingPathComponent("text.txt").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)

        let whole = try BPETrainer(vocabSize: 600).train(text: text)
        for chunk in [17, 64, 1000] {
            var t = BPETrainer(vocabSize: 600)
            t.chunkSize = chunk
            let chunked = try t.train(files: [path])
            XCTAssertTrue(chunked.merges.elementsEqual(whole.merges, by: { $0 == $1 }), "chunk size \(chunk): merges differ")
        }

        let out = dir.appendingPathComponent("text.tok").path
        let n = try whole.encodeFile(input: path, output: out)
        let ids = try TokenFile(path: out).tokens(0 ..< n)
        XCTAssertEqual(ids, whole.encode(text))
        XCTAssertEqual(whole.decode(ids), Array(text.utf8))
    }
}

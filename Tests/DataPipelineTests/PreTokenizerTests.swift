// The hand-written GPT-2 pre-tokenizer against Hugging Face ByteLevel's regex split,
// pre-token by pre-token (ids alone would hide boundary differences that no merge crosses).
@testable import DataPipeline
import Foundation
import XCTest

final class PreTokenizerTests: XCTestCase {
    func ours(_ text: String) -> [String] {
        let pre = PreTokenizer()
        var out: [String] = []
        var s = text
        s.withUTF8 { b in
            guard let base = b.baseAddress else { return }
            _ = pre.scan(base, from: 0, to: b.count, isFinal: true) { start, end in
                out.append(ByteLevel.encode(UnsafeBufferPointer(start: base + start, count: end - start)))
            }
        }
        return out
    }

    func testKnownSplits() {
        XCTAssertEqual(ours("Hello world"), ["Hello", "Ġworld"])
        XCTAssertEqual(ours("it's they're I'LL"), ["it", "'s", "Ġthey", "'re", "ĠI", "'", "LL"])
        XCTAssertEqual(ours("a  b"), ["a", "Ġ", "Ġb"])
        XCTAssertEqual(ours("a \n b"), ["a", "ĠĊ", "Ġb"])     // \s+(?!\S) keeps " \n", leaves " " for "b"
        XCTAssertEqual(ours("x\n\ny  "), ["x", "Ċ", "Ċ", "y", "ĠĠ"])
        XCTAssertEqual(ours("abc123!!? 45"), ["abc", "123", "!!?", "Ġ45"])
    }

    func testMatchesHuggingFace() throws {
        let dir = try scratchDirectory(self)
        var rng = SplitMix64(seed: 11)
        var texts = TokenizerParityTests.sampleTexts
        for _ in 0 ..< 3000 { texts.append(randomText(&rng, length: Int(rng.next() % 40))) }
        // Every BMP scalar, and every 37th above it, next to letters, digits, spaces and punctuation.
        var block = String.UnicodeScalarView()
        for v in Array(0x80 ..< 0x10000) + Array(stride(from: 0x10000, to: 0x110000, by: 37)) {
            guard let u = Unicode.Scalar(UInt32(v)) else { continue }
            block.append(u); block.append(contentsOf: " a1".unicodeScalars); block.append(u); block.append(u)
            block.append(contentsOf: "  ,".unicodeScalars)
            if block.count > 4000 { texts.append(String(block)); block = String.UnicodeScalarView() }
        }
        texts.append(String(block))
        let hf = try HFReference.preTokenize(texts: texts, scratch: dir)
        var failures = 0
        for (i, t) in texts.enumerated() where ours(t) != hf[i] {
            failures += 1
            if failures <= 5 {
                let o = ours(t)
                let k = (0 ..< min(o.count, hf[i].count)).first { o[$0] != hf[i][$0] } ?? min(o.count, hf[i].count)
                XCTFail("text \(i): pre-token \(k) ours \(o.dropFirst(k).prefix(3)) HF \(hf[i].dropFirst(k).prefix(3))")
            }
        }
        XCTAssertEqual(failures, 0, "\(failures) of \(texts.count) texts split differently")
    }
}

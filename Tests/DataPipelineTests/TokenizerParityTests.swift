// Our byte-level BPE against Hugging Face `tokenizers` (scripts/hf_tokenize.py):
// a tokenizer trained here must give HF's ids on all of WikiText-2 validation (the committed excerpt's, or
// the whole split with MOE_DIST_WIKITEXT2), and a
// tokenizer.json in GPT-2's own layout must load and give HF's ids.
import DataPipeline
import Foundation
import TestSupport
import XCTest

final class TokenizerParityTests: XCTestCase {
    /// The first `bytes` bytes of the train split (all of it if shorter: the committed excerpt), cut after a newline.
    static func trainSlice(bytes: Int) throws -> String {
        let h = try FileHandle(forReadingFrom: URL(fileURLWithPath: try TestPaths.wikitext2File("wiki.train.tokens")))
        defer { try? h.close() }
        var d = h.readData(ofLength: bytes)
        if let nl = d.lastIndex(of: 0x0A) { d = d.prefix(through: nl) }
        return String(decoding: d, as: UTF8.self)
    }

    func testTrainedTokenizerMatchesHFOnWholeValidationSplit() throws {
        let valid = try TestPaths.wikitext2File("wiki.valid.tokens")
        let dir = try scratchDirectory(self)
        let tok = try BPETrainer(vocabSize: 2000).train(text: try Self.trainSlice(bytes: 2_000_000))
        XCTAssertEqual(tok.vocabSize, 2000)
        XCTAssertEqual(tok.specialTokenId("<|endoftext|>"), 1999)
        let json = dir.appendingPathComponent("tokenizer.json").path
        try tok.write(to: json)

        // Ours: the streaming file encoder, the in-memory encoder, and the reloaded file.
        let tokPath = dir.appendingPathComponent("valid.tok").path
        let n = try tok.encodeFile(input: valid, output: tokPath)
        let ours = try TokenFile(path: tokPath).tokens(0 ..< n)
        let text = try String(contentsOfFile: valid, encoding: .utf8)
        XCTAssertEqual(tok.encode(text), ours, "in-memory encode differs from the file encoder")
        let reloaded = try BPETokenizer(contentsOf: json)
        XCTAssertEqual(reloaded.encode(text), ours, "reloaded tokenizer.json gives different ids")

        let hf = try HFReference.encodeFile(tokenizer: json, text: valid, scratch: dir)
        XCTAssertEqual(ours.count, hf.count)
        XCTAssertTrue(ours == hf, "ids differ from Hugging Face: \(firstDifference(ours, hf))")
        XCTAssertEqual(tok.decode(ours), Array(text.utf8), "decode(encode(valid)) != valid")
    }

    /// A tokenizer.json written the way GPT-2's is: byte tokens in bytes_to_unicode order,
    /// model without "type", pre_tokenizer without "use_regex", merges as "a b" strings,
    /// <|endoftext|> last with normalized true.
    func gpt2LayoutJSON() throws -> (json: String, vocabSize: Int) {
        let trained = try BPETrainer(vocabSize: 700, specialTokens: []).train(text: try Self.trainSlice(bytes: 300_000))
        var order: [Int] = []                                       // GPT-2: printable bytes first
        for b in 0 ..< 256 where (0x21 ... 0x7E).contains(b) || (0xA1 ... 0xAC).contains(b) || (0xAE ... 0xFF).contains(b) { order.append(b) }
        for b in 0 ..< 256 where !order.contains(b) { order.append(b) }
        var spellings = order.map { ByteLevel.encode([UInt8($0)]) }
        for id in 256 ..< trained.vocabSize { spellings.append(ByteLevel.encode(trained.tokenBytes[id])) }
        let eot = spellings.count
        var vocab: [String: Int] = [:]
        for (i, s) in spellings.enumerated() { vocab[s] = i }
        vocab["<|endoftext|>"] = eot
        let merges = trained.merges.map { ByteLevel.encode(trained.tokenBytes[Int($0.0)]) + " " + ByteLevel.encode(trained.tokenBytes[Int($0.1)]) }
        let root: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(),
            "added_tokens": [["id": eot, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": true, "special": true]],
            "normalizer": NSNull(),
            "pre_tokenizer": ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true],
            "post_processor": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false],
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true],
            "model": ["dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": "",
                      "end_of_word_suffix": "", "fuse_unk": false, "vocab": vocab, "merges": merges],
        ]
        let data = try JSONSerialization.data(withJSONObject: root, options: [.sortedKeys])
        return (String(decoding: data, as: UTF8.self), eot + 1)
    }

    static let sampleTexts: [String] = [
        "Hello world! It's a test; they're here, we've done it, I'm sure you'll see, he'd go.",
        " = Valkyria Chronicles III = \n\n Senjō no Valkyria 3 : <unk> Chronicles ( Japanese : 戦場のヴァルキュリア3 , lit . \n",
        "a<|endoftext|>b <|endoftext|> c<|endoftext|><|endoftext|>\n<|endoftext|",
        "   leading spaces\t\ttabs\n\n\nnewlines   \n  trailing   ",
        "numbers 123 4567890 1,000.5 ½ ² Ⅻ ٣٤ and 'quotes' \"double\" 'S 'LL",
        "émoji 👍🏽 family 👨‍👩‍👧 flags 🇫🇷 combining e\u{301} a\u{300}\u{316} Zalgo z\u{35b}\u{33f}",
        "控制 \u{0}\u{1}\u{7}\u{1b}[0m \u{85}NEL \u{a0}nbsp \u{2028}ls \u{3000}ideographic\u{200b}zwsp",
        "",
    ]

    func testGPT2LayoutTokenizerMatchesHF() throws {
        let dir = try scratchDirectory(self)
        let (json, vocabSize) = try gpt2LayoutJSON()
        let path = dir.appendingPathComponent("gpt2-layout.json").path
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        let tok = try BPETokenizer(contentsOf: path)
        XCTAssertEqual(tok.vocabSize, vocabSize)
        XCTAssertEqual(tok.specialTokenId("<|endoftext|>"), Int32(vocabSize - 1))
        XCTAssertEqual(tok.encode("!"), [0], "GPT-2 order: '!' is id 0")
        XCTAssertEqual(tok.encode(" "), [220], "GPT-2 order: space is id 220")
        let texts = Self.sampleTexts + [try Self.trainSlice(bytes: 20_000)]
        let hf = try HFReference.encode(tokenizer: path, texts: texts, scratch: dir)
        for (i, t) in texts.enumerated() {
            let ours = tok.encode(t)
            XCTAssertTrue(ours == hf[i], "text \(i) \(t.prefix(40).debugDescription): \(firstDifference(ours, hf[i]))")
            XCTAssertEqual(tok.decode(ours), Array(t.utf8))
        }
    }

    /// The ByteLevel `add_prefix_space` and BPE `ignore_merges` options, which our own
    /// files leave off, against HF.
    func testPrefixSpaceAndIgnoreMergesMatchHF() throws {
        let dir = try scratchDirectory(self)
        let tok = try BPETrainer(vocabSize: 900).train(text: try Self.trainSlice(bytes: 300_000))
        var json = String(decoding: tok.jsonData(), as: UTF8.self)
        json = json.replacingOccurrences(of: "\"add_prefix_space\": false", with: "\"add_prefix_space\": true")
        json = json.replacingOccurrences(of: "\"ignore_merges\": false", with: "\"ignore_merges\": true")
        let path = dir.appendingPathComponent("variant.json").path
        try json.write(toFile: path, atomically: true, encoding: .utf8)
        let variant = try BPETokenizer(contentsOf: path)
        XCTAssertTrue(variant.addPrefixSpace && variant.ignoreMerges)
        var rng = SplitMix64(seed: 5)
        let texts = Self.sampleTexts + (0 ..< 100).map { _ in randomText(&rng, length: Int(rng.next() % 30)) }
            + ["hello", " hello", "<|endoftext|>hello", "hello<|endoftext|> world"]
        let hf = try HFReference.encode(tokenizer: path, texts: texts, scratch: dir)
        for (i, t) in texts.enumerated() {
            let ours = variant.encode(t)
            XCTAssertTrue(ours == hf[i], "text \(t.debugDescription): \(firstDifference(ours, hf[i]))")
        }
    }

    /// Random Unicode text against HF: checks the hand-written pre-tokenizer's classes.
    func testRandomUnicodeMatchesHF() throws {
        let dir = try scratchDirectory(self)
        let tok = try BPETrainer(vocabSize: 600).train(text: try Self.trainSlice(bytes: 200_000) + Self.sampleTexts.joined())
        let path = dir.appendingPathComponent("tokenizer.json").path
        try tok.write(to: path)
        var rng = SplitMix64(seed: 42)
        let texts = (0 ..< 300).map { _ in randomText(&rng, length: Int(rng.next() % 60)) }
        let hf = try HFReference.encode(tokenizer: path, texts: texts + Self.sampleTexts, scratch: dir)
        for (i, t) in (texts + Self.sampleTexts).enumerated() {
            let ours = tok.encode(t)
            XCTAssertTrue(ours == hf[i], "text \(t.debugDescription) \(Array(t.unicodeScalars.map { String($0.value, radix: 16) })): \(firstDifference(ours, hf[i]))")
        }
    }
}

/// Deterministic generator for reproducible random text.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Random text mixing ASCII letters, digits, apostrophe contractions, punctuation,
/// whitespace of every kind, Latin/Greek/Cyrillic/CJK, combining marks, emoji and
/// other planes: any valid scalar (not a surrogate).
func randomText<G: RandomNumberGenerator>(_ g: inout G, length: Int) -> String {
    let pieces: [[UInt32]] = [
        Array(0x61 ... 0x7A), Array(0x41 ... 0x5A), Array(0x30 ... 0x39), [0x27, 0x27, 0x73, 0x74, 0x6C, 0x72, 0x65, 0x76, 0x6D, 0x64],
        Array(0x21 ... 0x2F), [0x20, 0x20, 0x20, 0x0A, 0x09, 0x0D, 0x0B, 0x0C, 0x85, 0xA0, 0x1680, 0x2000, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000, 0x200B, 0x180E, 0xFEFF],
        Array(0x00 ... 0x1F), Array(0xC0 ... 0x24F), Array(0x370 ... 0x3FF), Array(0x400 ... 0x4FF), Array(0x300 ... 0x36F),
        Array(0x4E00 ... 0x4E80), Array(0x3040 ... 0x30FF), Array(0x0660 ... 0x0669), Array(0x2150 ... 0x218B), Array(0x1F300 ... 0x1F64F),
        Array(0x10000 ... 0x10100), Array(0xE000 ... 0xE010), Array(0xFFF0 ... 0xFFFD),
    ]
    var s = String.UnicodeScalarView()
    for _ in 0 ..< length {
        let r = Int(g.next() % 100)
        let v: UInt32
        if r < 95 {
            let piece = pieces[Int(g.next() % UInt64(pieces.count))]
            v = piece[Int(g.next() % UInt64(piece.count))]
        } else {
            var x = UInt32(g.next() % 0x110000)
            if (0xD800 ... 0xDFFF).contains(x) { x = 0x41 }
            v = x
        }
        s.append(Unicode.Scalar(v)!)
    }
    return String(s)
}

// Reading and writing Hugging Face `tokenizer.json` for byte-level BPE.
//
// Written form (loads with `tokenizers.Tokenizer.from_file`):
//   model: {"type": "BPE", "vocab": {token: id}, "merges": ["a b", ...], ...}
//   pre_tokenizer: ByteLevel, add_prefix_space false, use_regex true
//   decoder: ByteLevel; post_processor: ByteLevel, trim_offsets false
//   added_tokens: the special tokens (also in the vocabulary, as GPT-2 has it).
// Read form: the above, and GPT-2's own file (no "type" in model, no "use_regex",
// merges as "a b" strings); merges may also be ["a", "b"] pairs (tokenizers >= 0.20).
import Foundation

extension BPETokenizer {
    /// Loads a byte-level BPE `tokenizer.json`. Any problem is one `DataFileError` naming the file.
    public convenience init(contentsOf path: String) throws {
        let file = TokenizerJSONFile(path: path)
        let (data, root) = try file.read()
        let model = try file.bpeModel(root)
        let addPrefixSpace = try file.byteLevelPreTokenizer(root)
        let specials = try file.specialTokens(root)
        let (tokens, ids) = try file.vocabulary(model.vocab, specials: specials)
        let merges = try file.merges(model.merges, ids: ids)
        try self.init(tokens: tokens, merges: merges, specialTokens: specials,
                      addPrefixSpace: addPrefixSpace, ignoreMerges: model.ignoreMerges, source: path)
        fingerprint = TokenizerFingerprint.of(data)
    }

    /// The Hugging Face `tokenizer.json` text.
    public func jsonData() -> Data {
        let specialIds = Set(specialTokens.map { $0.id })
        func spelling(_ id: Int) -> String {
            specialIds.contains(Int32(id)) ? String(decoding: tokenBytes[id], as: UTF8.self) : ByteLevel.encode(tokenBytes[id])
        }
        var s = "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n  \"added_tokens\": ["
        for (i, t) in specialTokens.enumerated() {
            s += (i == 0 ? "\n" : ",\n")
            s += "    {\"id\": \(t.id), \"content\": \(jsonString(t.content)), \"single_word\": false, \"lstrip\": false, "
            s += "\"rstrip\": false, \"normalized\": false, \"special\": true}"
        }
        s += specialTokens.isEmpty ? "],\n" : "\n  ],\n"
        s += "  \"normalizer\": null,\n"
        s += "  \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": \(addPrefixSpace), \"trim_offsets\": true, \"use_regex\": true},\n"
        s += "  \"post_processor\": {\"type\": \"ByteLevel\", \"add_prefix_space\": \(addPrefixSpace), \"trim_offsets\": false, \"use_regex\": true},\n"
        s += "  \"decoder\": {\"type\": \"ByteLevel\", \"add_prefix_space\": \(addPrefixSpace), \"trim_offsets\": true, \"use_regex\": true},\n"
        s += "  \"model\": {\n    \"type\": \"BPE\",\n    \"dropout\": null,\n    \"unk_token\": null,\n"
        s += "    \"continuing_subword_prefix\": null,\n    \"end_of_word_suffix\": null,\n    \"fuse_unk\": false,\n"
        s += "    \"byte_fallback\": false,\n    \"ignore_merges\": \(ignoreMerges),\n    \"vocab\": {"
        var first = true
        var seen = Set<String>()
        for id in 0 ..< vocabSize where !tokenBytes[id].isEmpty {
            let t = spelling(id)
            if !seen.insert(t).inserted { continue }
            s += (first ? "\n      " : ",\n      ") + jsonString(t) + ": \(id)"
            first = false
        }
        s += "\n    },\n    \"merges\": ["
        for (i, (a, b)) in merges.enumerated() {
            s += (i == 0 ? "\n      " : ",\n      ") + jsonString(spelling(Int(a)) + " " + spelling(Int(b)))
        }
        s += "\n    ]\n  }\n}\n"
        return Data(s.utf8)
    }

    /// Writes `tokenizer.json` (via a temporary file and a rename); the tokenizer's fingerprint becomes that file's.
    public func write(to path: String) throws {
        let data = jsonData()
        try writeFileAtomically(data, to: path)
        fingerprint = TokenizerFingerprint.of(data)
    }
}

/// A JSON string literal.
func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
        }
    }
    return out + "\""
}

/// The parts of a `tokenizer.json` being read, each checked in the order `init(contentsOf:)` reads them;
/// every problem is a `DataFileError` naming the file.
private struct TokenizerJSONFile {
    let path: String

    func fail(_ why: String) -> DataFileError { DataFileError(path, why) }

    /// The file's bytes and its top-level object.
    func read() throws -> (Data, [String: Any]) {
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            var isDir: ObjCBool = false
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDir) {
                throw fail(isDir.boolValue ? "is a directory, not a tokenizer.json" : "cannot read tokenizer")
            }
            throw fail("tokenizer file does not exist")
        }
        if data.isEmpty { throw fail("tokenizer file is empty") }
        let object: Any
        do { object = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) } catch {
            throw fail("not a tokenizer.json: not valid JSON")
        }
        guard let root = object as? [String: Any] else {
            throw fail("not a tokenizer.json: the top level is not a JSON object")
        }
        return (data, root)
    }

    /// Model: BPE with a vocabulary and merges.
    func bpeModel(_ root: [String: Any]) throws -> (vocab: [String: Any], merges: [Any], ignoreMerges: Bool) {
        guard let model = root["model"] as? [String: Any] else { throw fail("not a tokenizer.json: no \"model\" object") }
        if let type = model["type"] as? String, type != "BPE" {
            throw fail("model type is \(type), not BPE (a byte-level BPE tokenizer is required)")
        }
        guard let vocab = model["vocab"] as? [String: Any], let mergeList = model["merges"] as? [Any] else {
            throw fail("model is not BPE: it needs \"vocab\" and \"merges\"")
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let s = model[key] as? String, !s.isEmpty { throw fail("BPE \(key) \"\(s)\" is not supported (byte-level BPE uses none)") }
        }
        if let d = model["dropout"] as? Double, d > 0 { throw fail("BPE dropout is not supported") }
        return (vocab, mergeList, model["ignore_merges"] as? Bool ?? false)
    }

    /// Pre-tokenizer: ByteLevel with the GPT-2 pattern (possibly alone inside a Sequence), and no normalizer.
    /// Returns its add_prefix_space.
    func byteLevelPreTokenizer(_ root: [String: Any]) throws -> Bool {
        var pre = root["pre_tokenizer"] as? [String: Any]
        if let p = pre, p["type"] as? String == "Sequence", let list = p["pretokenizers"] as? [[String: Any]], list.count == 1 {
            pre = list[0]
        }
        guard let pt = pre, pt["type"] as? String == "ByteLevel" else {
            let what = (root["pre_tokenizer"] as? [String: Any])?["type"] as? String ?? "missing"
            throw fail("not byte-level BPE: pre_tokenizer is \(what), not ByteLevel")
        }
        if pt["use_regex"] as? Bool == false { throw fail("ByteLevel use_regex false is not supported") }
        if let n = root["normalizer"], !(n is NSNull) {
            let what = (n as? [String: Any])?["type"] as? String ?? "?"
            throw fail("normalizer \(what) is not supported (byte-level BPE uses none)")
        }
        return pt["add_prefix_space"] as? Bool ?? false
    }

    /// Added (special) tokens.
    func specialTokens(_ root: [String: Any]) throws -> [(content: String, id: Int32)] {
        var specials: [(content: String, id: Int32)] = []
        for case let t as [String: Any] in root["added_tokens"] as? [Any] ?? [] {
            guard let content = t["content"] as? String, let id = (t["id"] as? NSNumber)?.intValue, id >= 0 else {
                throw fail("added_tokens entry without content and id")
            }
            specials.append((content, Int32(id)))
        }
        return specials
    }

    /// Vocabulary: ids may come in any order; every token must be byte-level text. Returns each id's bytes
    /// and each token's id.
    func vocabulary(_ vocab: [String: Any], specials: [(content: String, id: Int32)]) throws
        -> (tokens: [[UInt8]], ids: [String: Int32]) {
        let specialIdOf = Dictionary(specials.map { ($0.content, $0.id) }, uniquingKeysWith: { a, _ in a })
        var ids: [String: Int32] = [:]
        ids.reserveCapacity(vocab.count)
        var maxId = specials.map { Int($0.id) }.max() ?? -1
        for (token, value) in vocab {
            guard let id = (value as? NSNumber)?.intValue, id >= 0, id < Int(Int32.max) else {
                throw fail("vocabulary entry \"\(token)\" has no valid id")
            }
            ids[token] = Int32(id)
            maxId = max(maxId, id)
        }
        var tokens = [[UInt8]](repeating: [], count: maxId + 1)
        for (token, id) in ids {
            if let special = specialIdOf[token], special == id {
                tokens[Int(id)] = Array(token.utf8)
            } else if let bytes = ByteLevel.decode(token) {
                tokens[Int(id)] = bytes
            } else {
                throw fail("not byte-level BPE: vocabulary token \"\(token)\" (id \(id)) has characters outside the byte-level alphabet")
            }
        }
        for s in specials { tokens[Int(s.id)] = Array(s.content.utf8) }
        return (tokens, ids)
    }

    /// Merges: "a b" or ["a", "b"], as pairs of token ids.
    func merges(_ mergeList: [Any], ids: [String: Int32]) throws -> [(Int32, Int32)] {
        var merges: [(Int32, Int32)] = []
        merges.reserveCapacity(mergeList.count)
        for (rank, m) in mergeList.enumerated() {
            var pair: (String, String)? = nil
            if let s = m as? String, let sp = s.firstIndex(of: " ") {
                pair = (String(s[..<sp]), String(s[s.index(after: sp)...]))
            } else if let a = m as? [String], a.count == 2 {
                pair = (a[0], a[1])
            }
            guard let (a, b) = pair else { throw fail("merge \(rank) is neither \"a b\" nor [\"a\", \"b\"]") }
            guard let ia = ids[a], let ib = ids[b] else { throw fail("merge \(rank) (\(a) \(b)) uses a token not in the vocabulary") }
            merges.append((ia, ib))
        }
        return merges
    }
}

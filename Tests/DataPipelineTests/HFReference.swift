// Runs scripts/hf_tokenize.py (Hugging Face `tokenizers`) as the independent reference.
import Foundation
import TestSupport
import XCTest

enum HFReference {
    static var script: String { TestPaths.repoRoot + "/scripts/hf_tokenize.py" }

    /// Runs the script; throws `missingTool` (a skip, or a failure in CI) if python3 or `tokenizers` is missing.
    static func run(_ args: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", script] + args
        p.environment = ProcessInfo.processInfo.environment.merging(["TOKENIZERS_PARALLELISM": "false"]) { $1 }
        let err = Pipe()
        p.standardError = err
        do { try p.run() } catch { throw missingTool("cannot run python3: \(error)") }
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        if p.terminationStatus == 3 || p.terminationStatus == 127 {
            throw missingTool("Hugging Face tokenizers not available: \(String(decoding: errData, as: UTF8.self))")
        }
        guard p.terminationStatus == 0 else {
            throw NSError(domain: "HFReference", code: Int(p.terminationStatus),
                          userInfo: [NSLocalizedDescriptionKey: "hf_tokenize.py \(args.first ?? "") failed: \(String(decoding: errData, as: UTF8.self))"])
        }
    }

    /// Hugging Face ids of a whole text file.
    static func encodeFile(tokenizer: String, text: String, scratch: URL) throws -> [Int32] {
        let out = scratch.appendingPathComponent("hf-\(UUID().uuidString).i32")
        try run(["encode", tokenizer, text, out.path])
        let data = try Data(contentsOf: out)
        return data.withUnsafeBytes { raw in (0 ..< data.count / 4).map { Int32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) } }
    }

    /// Hugging Face ids of each string.
    static func encode(tokenizer: String, texts: [String], scratch: URL) throws -> [[Int32]] {
        let input = scratch.appendingPathComponent("in-\(UUID().uuidString).json")
        let output = scratch.appendingPathComponent("out-\(UUID().uuidString).json")
        try JSONSerialization.data(withJSONObject: texts).write(to: input)
        try run(["encode-json", tokenizer, input.path, output.path])
        let lists = try JSONSerialization.jsonObject(with: Data(contentsOf: output)) as! [[NSNumber]]
        return lists.map { $0.map { Int32($0.intValue) } }
    }
}

/// A fresh temporary directory, removed at the end of the test.
func scratchDirectory(_ test: XCTestCase) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moe-dist-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    test.addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
    return dir
}

/// First index where two id sequences differ, for failure messages.
func firstDifference(_ a: [Int32], _ b: [Int32]) -> String {
    for i in 0 ..< min(a.count, b.count) where a[i] != b[i] {
        return "first difference at \(i): \(a[i]) vs \(b[i]) (lengths \(a.count), \(b.count))"
    }
    return a.count == b.count ? "identical" : "lengths \(a.count) vs \(b.count), common prefix equal"
}

extension HFReference {
    /// Hugging Face ByteLevel pre-tokens of each string (byte-level spelling).
    static func preTokenize(texts: [String], scratch: URL) throws -> [[String]] {
        let input = scratch.appendingPathComponent("pin-\(UUID().uuidString).json")
        let output = scratch.appendingPathComponent("pout-\(UUID().uuidString).json")
        try JSONSerialization.data(withJSONObject: texts).write(to: input)
        try run(["pretokenize-json", input.path, output.path])
        return try JSONSerialization.jsonObject(with: Data(contentsOf: output)) as! [[String]]
    }
}

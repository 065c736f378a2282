// `moe-dist data ...`: turn text into token files and back.
//   prepare  train a byte-level BPE tokenizer on a train split and encode all splits
//   encode   text file -> token file with an existing tokenizer.json
//   decode   token file -> text on stdout
//   inspect  token file header and vocabulary use
// Every failure is one line on stderr naming the file and the problem, and a non-zero
// exit; outputs are written under a temporary name and renamed when complete.
import ArgumentParser
import DataPipeline
import Foundation

struct DataCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data", abstract: "Prepare, encode, decode and inspect token files.",
        discussion: reflow("""
            Token files hold a 64-byte header (MOETOKS1, version, bytes per token, count, \
            vocabulary size, tokenizer fingerprint) and little-endian ids. Tokenizers are Hugging Face \
            tokenizer.json files for byte-level BPE (GPT-2's own file loads too). The fingerprint \
            (header bytes 28..<36) is the first 8 bytes, little-endian, of the SHA-256 of the \
            tokenizer.json that encoded the file; prepare and encode write it, decode, train and \
            eval refuse a file whose fingerprint differs from the tokenizer's or checkpoint's \
            (0 = written before fingerprints: accepted with a warning). \
            Exit statuses: 0 done, 2 usage error, 3 bad input file (docs/exit-status.md).
            """),
        subcommands: [Prepare.self, Encode.self, Decode.self, Inspect.self])
}

/// Runs `body`, turning a data error into one line on stderr and exit status 3 (bad data, docs/exit-status.md).
private func reportingErrors(_ body: () throws -> Void) throws {
    do { try body() } catch let e as DataFileError {
        FileHandle.standardError.write(Data("moe-dist data: \(e)\n".utf8))
        throw ExitCode(ExitStatus.badData)
    }
}

private func stderrLine(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }

/// Warns (one line) when a text input is not valid UTF-8: it is tokenized byte for byte all the same, but tools
/// that read text as UTF-8 (Hugging Face `tokenizers`, Python's open()) reject it or change it.
private func warnIfNotUTF8(_ path: String) throws {
    guard let bad = try UTF8Validation.check(path: path) else { return }
    stderrLine("warning: \(path) is not valid UTF-8: \(bad.invalidSequences) invalid byte sequence(s), the first at byte offset "
               + "\(bad.firstOffset); the bytes are tokenized as they are (decode gives them back), but Hugging Face "
               + "tokenizers and other UTF-8 readers cannot read this text")
}

extension DataCommand {
    struct Prepare: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Train a byte-level BPE tokenizer on the train split and encode every split.",
            discussion: reflow("""
                Writes OUT/tokenizer.json and OUT/train.tok, OUT/valid.tok (and OUT/test.tok). \
                Inputs are UTF-8 text (WikiText .tokens or .raw files work as they are); \
                a file that is not valid UTF-8 is tokenized byte for byte all the same, with a \
                warning that names it and the byte offset of its first invalid sequence (Hugging \
                Face tokenizers cannot read such text). \
                The vocabulary is the 256 bytes, then merges, then the special tokens: each \
                --special-token in order, then " <unk>" if the train split contains WikiText's \
                unknown-word marker, then <|endoftext|> as the last id (not inserted into the \
                token files). A special token (Hugging Face added_tokens) is matched literally \
                before pre-tokenisation and is always one id; " <unk>" includes the space before \
                the marker (every <unk> in WikiText follows a space), so one <unk> is one token, \
                decoding gives the text back byte for byte, and Hugging Face tokenizers gives \
                the same ids. Training reads the train split in chunks and keeps only the \
                distinct pre-tokens and their counts.

                Example (the README's WikiText-2 walk-through):
                  moe-dist data prepare --train downloads/wikitext-2/wiki.train.tokens \\
                      --valid downloads/wikitext-2/wiki.valid.tokens \\
                      --test downloads/wikitext-2/wiki.test.tokens \\
                      --vocab-size 8192 --out data/wt2
                """))

        @Option(help: ArgumentHelp("Training text; the tokenizer is learned from it.", valueName: "file"))
        var train: String
        @Option(help: ArgumentHelp("Validation text.", valueName: "file"))
        var valid: String
        @Option(help: ArgumentHelp("Test text (optional).", valueName: "file"))
        var test: String?
        @Option(name: .customLong("vocab-size"), help: ArgumentHelp("Vocabulary size including <|endoftext|> (at least 257).", valueName: "n"))
        var vocabSize: Int
        @Option(help: ArgumentHelp("Output directory (created if missing).", valueName: "dir"))
        var out: String
        @Option(name: .customLong("special-token"),
                help: ArgumentHelp("A literal string to keep as one special token (repeatable), e.g. '<pad>'.", valueName: "text"))
        var specialTokens: [String] = []

        /// WikiText's unknown-word marker, with the space that precedes it.
        static let wikiTextUnknown = " <unk>"
        static let endOfText = "<|endoftext|>"

        func validate() throws {
            for t in specialTokens where t.isEmpty { throw ValidationError("--special-token must not be empty") }
            if Set(specialTokens).count != specialTokens.count { throw ValidationError("--special-token: a token is given twice") }
            guard vocabSize >= 257 else { throw ValidationError("--vocab-size must be at least 257 (256 bytes + <|endoftext|>), got \(vocabSize)") }
            guard vocabSize <= 1 << 24 else { throw ValidationError("--vocab-size \(vocabSize) is unreasonably large (max 16777216)") }
        }

        func run() throws {
            try reportingErrors {
                var splits = [("train", train), ("valid", valid)]
                if let t = test { splits.append(("test", t)) }
                for (_, path) in splits { try checkTextInput(path) }
                for (_, path) in splits { try warnIfNotUTF8(path) }
                do {
                    try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
                } catch { throw DataFileError(out, "cannot create output directory") }

                var specials = specialTokens
                if !specials.contains(Self.wikiTextUnknown),
                   let text = FileManager.default.contents(atPath: train), text.range(of: Data("<unk>".utf8)) != nil {
                    specials.append(Self.wikiTextUnknown)
                }
                if !specials.contains(Self.endOfText) { specials.append(Self.endOfText) }
                stderrLine("special tokens: " + specials.map { String(reflecting: $0) }.joined(separator: ", "))
                var trainer = BPETrainer(vocabSize: vocabSize, specialTokens: specials)
                trainer.showProgress = true
                let t0 = Date()
                let tokenizer = try trainer.train(files: [train])
                let tokenizerPath = out + "/tokenizer.json"
                try tokenizer.write(to: tokenizerPath)
                stderrLine(String(format: "tokenizer: %d ids (%d merges) in %.3f s -> %@",
                                  tokenizer.vocabSize, tokenizer.merges.count, Date().timeIntervalSince(t0), tokenizerPath))
                if tokenizer.vocabSize < vocabSize {
                    stderrLine("note: asked for \(vocabSize) ids, but \(train) has no more pairs to merge after \(tokenizer.vocabSize)")
                }
                for (name, path) in splits {
                    let dest = "\(out)/\(name).tok"
                    let n = try tokenizer.encodeFile(input: path, output: dest, progress: ProgressLine("encode \(name)"))
                    print("\(dest): \(n) tokens")
                }
            }
        }
    }

    struct Encode: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Encode a UTF-8 text file into a token file.",
            discussion: reflow("""
                Example:
                  moe-dist data encode --tokenizer data/wt2/tokenizer.json \\
                      --input downloads/wikitext-2/wiki.valid.tokens --out data/wt2/valid2.tok
                """))

        @Option(help: ArgumentHelp("A byte-level BPE tokenizer.json (ours or GPT-2's).", valueName: "file"))
        var tokenizer: String
        @Option(help: ArgumentHelp("UTF-8 text to encode.", valueName: "file"))
        var input: String
        @Option(help: ArgumentHelp("Token file to write.", valueName: "file.tok"))
        var out: String

        func run() throws {
            try reportingErrors {
                let tok = try BPETokenizer(contentsOf: tokenizer)
                try checkTextInput(input)
                try warnIfNotUTF8(input)
                let t0 = Date()
                let n = try tok.encodeFile(input: input, output: out, progress: ProgressLine("encode"))
                let seconds = Date().timeIntervalSince(t0)
                let bytes = (try? FileManager.default.attributesOfItem(atPath: input)[.size] as? Int) ?? 0
                stderrLine(String(format: "%@: %d tokens, %.2f s, %.1f MB/s", out, n, seconds, Double(bytes) / 1e6 / max(seconds, 1e-9)))
            }
        }
    }

    struct Decode: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Decode a token file to text on stdout.",
            discussion: reflow("""
                Example:
                  moe-dist data decode --input data/wt2/valid.tok \\
                      --tokenizer data/wt2/tokenizer.json > valid.txt
                """))

        @Option(help: ArgumentHelp("The tokenizer.json the file was encoded with.", valueName: "file"))
        var tokenizer: String
        @Option(help: ArgumentHelp("Token file to decode.", valueName: "file.tok"))
        var input: String

        func run() throws {
            try reportingErrors {
                let tok = try BPETokenizer(contentsOf: tokenizer)
                let file = try TokenFile(path: input)
                if file.fingerprint == 0 {
                    stderrLine("moe-dist data: " + TokenizerFingerprint.unknownWarning(input))
                } else if file.fingerprint != tok.fingerprint {
                    throw DataFileError(input, "was encoded with another tokenizer (fingerprint \(TokenizerFingerprint.hex(file.fingerprint))) "
                                        + "than \(tokenizer) (fingerprint \(TokenizerFingerprint.hex(tok.fingerprint)))")
                }
                guard file.vocabSize <= tok.vocabSize else {
                    throw DataFileError(input, "vocabulary size \(file.vocabSize) is larger than the tokenizer's \(tok.vocabSize) (\(tokenizer))")
                }
                let step = 1 << 20
                var start = 0
                while start < file.count {
                    let end = min(file.count, start + step)
                    FileHandle.standardOutput.write(Data(tok.decode(file.tokens(start ..< end))))
                    start = end
                }
            }
        }
    }

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a token file's header and vocabulary use; check every id.",
            discussion: reflow("""
                Example:
                  moe-dist data inspect data/wt2/train.tok --top 20 \\
                      --tokenizer data/wt2/tokenizer.json
                """))

        @Argument(help: ArgumentHelp("Token file.", valueName: "file.tok"))
        var file: String
        @Option(help: ArgumentHelp("Show the text of the top ids with this tokenizer.json.", valueName: "file"))
        var tokenizer: String?
        @Option(help: ArgumentHelp("How many of the most frequent ids to list.", valueName: "n"))
        var top: Int = 10

        func run() throws {
            try reportingErrors {
                let f = try TokenFile(path: file)
                let tok = try tokenizer.map { try BPETokenizer(contentsOf: $0) }
                // Count per id: a table for ordinary vocabularies, a dictionary for huge ones.
                var table = [Int](repeating: 0, count: f.vocabSize <= 1 << 24 ? f.vocabSize : 0)
                var sparse: [Int: Int] = [:]
                let step = 1 << 20
                var buf = [Int32](repeating: 0, count: step)
                var start = 0
                while start < f.count {
                    let n = min(step, f.count - start)
                    buf.withUnsafeMutableBufferPointer { f.copyTokens(start ..< start + n, into: $0.baseAddress!) }
                    if table.isEmpty { for i in 0 ..< n { sparse[Int(buf[i]), default: 0] += 1 } }
                    else { for i in 0 ..< n { table[Int(buf[i])] += 1 } }
                    start += n
                }
                if !table.isEmpty { for (id, c) in table.enumerated() where c > 0 { sparse[id] = c } }
                let counts = sparse
                let distinct = counts.count
                print("file:            \(file)")
                print("format:          MOETOKS1 version \(f.header.version), \(f.bytesPerToken) bytes per token")
                print("tokens:          \(f.count)")
                print("vocabulary size: \(f.vocabSize)")
                print("tokenizer:       fingerprint " + (f.fingerprint == 0 ? "0 (unknown: written before fingerprints)"
                                                         : TokenizerFingerprint.hex(f.fingerprint))
                      + (tok.map { t in t.fingerprint == f.fingerprint ? " (matches \(tokenizer!))" : " (\(tokenizer!) has \(TokenizerFingerprint.hex(t.fingerprint)))" } ?? ""))
                print(String(format: "ids used:        %d of %d (%.1f%%)", distinct, f.vocabSize, 100 * Double(distinct) / Double(f.vocabSize)))
                let order = counts.keys.sorted { counts[$0]! > counts[$1]! || (counts[$0]! == counts[$1]! && $0 < $1) }
                print("most frequent ids:")
                print(String(format: "  %8@  %10@  %6@", "id", "count", "share") + (tok == nil ? "" : "  text"))
                for id in order.prefix(max(0, top)) {
                    let c = counts[id]!
                    var line = String(format: "  %8d  %10d  %5.2f%%", id, c, 100 * Double(c) / Double(max(f.count, 1)))
                    if let t = tok, id < t.vocabSize {
                        line += "  " + String(reflecting: t.decodeString([Int32(id)]))
                    }
                    print(line)
                }
            }
        }
    }
}

/// A text input must exist, be a regular file and not be empty.
private func checkTextInput(_ path: String) throws {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw DataFileError(path, "input file does not exist") }
    if isDir.boolValue { throw DataFileError(path, "is a directory, not a text file") }
    let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
    if size == 0 { throw DataFileError(path, "input file is empty") }
}

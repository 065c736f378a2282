// Byte-level BPE encoding and decoding, id for id the same as Hugging Face
// `tokenizers` with a ByteLevel pre-tokenizer and a BPE model:
//   1. split the text on special tokens (leftmost, longest first);
//   2. split each remaining piece into GPT-2 pre-tokens (PreTokenizer.swift);
//   3. start each pre-token as one symbol per byte, then repeatedly merge the adjacent
//      pair with the lowest merge rank (leftmost on a tie) until no pair has a rank.
// Step 3 is cached per distinct pre-token. A tokenizer is not thread-safe (the cache).
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public final class BPETokenizer {
    /// Ids run from 0 to `vocabSize - 1`.
    public let vocabSize: Int
    /// The bytes each id stands for (special tokens: their UTF-8 text).
    public let tokenBytes: [[UInt8]]
    /// Merges in rank order: rank `r` joins `merges[r].0` and `merges[r].1`.
    public let merges: [(Int32, Int32)]
    /// Special tokens, matched literally in text before pre-tokenisation.
    public let specialTokens: [(content: String, id: Int32)]
    /// Hugging Face ByteLevel `add_prefix_space`: prepend a space to text that does not start with one.
    public let addPrefixSpace: Bool
    /// Hugging Face BPE `ignore_merges`: a pre-token that is itself in the vocabulary is one token.
    public let ignoreMerges: Bool
    /// The fingerprint (SPEC section 8) of the tokenizer.json this tokenizer was loaded from or last
    /// written to; 0 for one only built in memory. Token files it writes carry it.
    public internal(set) var fingerprint: UInt64 = 0

    /// Id of each single-byte token.
    let byteIds: [Int32]
    /// (left << 32 | right) -> (rank << 32 | merged id).
    let mergeMap: [UInt64: UInt64]
    let vocabIndex: [[UInt8]: Int32]
    let matcher: SpecialTokenMatcher
    let preTokenizer = PreTokenizer()

    // Word cache: pre-token bytes -> span of `cacheIds`.
    private let cache = ByteStringTable(capacity: 1 << 14)
    private var cacheSpans: [UInt64] = []          // start << 32 | count
    private var cacheIds: [Int32] = []
    private static let cacheLimit = 1 << 21

    /// Builds a tokenizer from its parts. `tokens[id]` is the byte string of `id` (a special
    /// token's bytes are its UTF-8 text). `source` names the origin in error messages.
    public init(tokens: [[UInt8]], merges: [(Int32, Int32)], specialTokens: [(content: String, id: Int32)] = [],
                addPrefixSpace: Bool = false, ignoreMerges: Bool = false, source: String = "tokenizer") throws {
        guard !tokens.isEmpty else { throw DataFileError(source, "empty vocabulary") }
        var index: [[UInt8]: Int32] = [:]
        index.reserveCapacity(tokens.count)
        let specialIds = Set(specialTokens.map { $0.id })
        for (i, t) in tokens.enumerated() where !specialIds.contains(Int32(i)) && !t.isEmpty {
            if index[t] == nil { index[t] = Int32(i) }
        }
        for s in specialTokens where s.id < 0 || Int(s.id) >= tokens.count {
            throw DataFileError(source, "special token \(s.content) has id \(s.id) outside the vocabulary")
        }
        var byteIds = [Int32](repeating: -1, count: 256)
        for b in 0 ..< 256 {
            guard let id = index[[UInt8(b)]] else {
                throw DataFileError(source, "not a byte-level vocabulary: no token for byte 0x\(String(b, radix: 16))")
            }
            byteIds[b] = id
        }
        var map: [UInt64: UInt64] = [:]
        map.reserveCapacity(merges.count)
        for (rank, (a, b)) in merges.enumerated() {
            guard a >= 0, b >= 0, Int(a) < tokens.count, Int(b) < tokens.count else {
                throw DataFileError(source, "merge \(rank) refers to an id outside the vocabulary")
            }
            guard let merged = index[tokens[Int(a)] + tokens[Int(b)]] else {
                throw DataFileError(source, "merge \(rank) (\(ByteLevel.encode(tokens[Int(a)])) \(ByteLevel.encode(tokens[Int(b)]))) "
                                    + "makes a token that is not in the vocabulary")
            }
            map[UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))] = UInt64(rank) << 32 | UInt64(UInt32(merged))
        }
        self.vocabSize = tokens.count
        self.tokenBytes = tokens
        self.merges = merges
        self.specialTokens = specialTokens
        self.addPrefixSpace = addPrefixSpace
        self.ignoreMerges = ignoreMerges
        self.byteIds = byteIds
        self.mergeMap = map
        self.vocabIndex = index
        self.matcher = SpecialTokenMatcher(specialTokens.map { (Array($0.content.utf8), $0.id) })
    }

    /// Id of a special token, if the tokenizer has it.
    public func specialTokenId(_ content: String) -> Int32? {
        specialTokens.first { $0.content == content }?.id
    }

    // MARK: Encoding

    /// Ids of `text`.
    public func encode(_ text: String) -> [Int32] {
        var s = text
        var out: [Int32] = []
        s.withUTF8 { encode(bytes: $0, into: &out) }
        return out
    }

    /// Appends the ids of the UTF-8 text `bytes` to `out`.
    public func encode(bytes: UnsafeBufferPointer<UInt8>, into out: inout [Int32]) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        forEachSegment(base, bytes.count) { start, end, special in
            if start < end { encodeSegment(base, start, end, into: &out) }
            if let id = special { out.append(id) }
        }
    }

    /// Calls `body` for each stretch of text between special tokens, with the special
    /// token (if any) that ends it.
    @inline(__always)
    func forEachSegment(_ b: UnsafePointer<UInt8>, _ n: Int, _ body: (Int, Int, Int32?) throws -> Void) rethrows {
        var p = 0
        while p < n {
            if let m = matcher.next(b, from: p, to: n) {
                try body(p, m.start, m.id)
                p = m.start + m.length
            } else {
                try body(p, n, nil)
                p = n
            }
        }
    }

    /// Encodes one stretch of text that contains no special token.
    func encodeSegment(_ b: UnsafePointer<UInt8>, _ start: Int, _ end: Int, into out: inout [Int32]) {
        if addPrefixSpace && b[start] != 0x20 {
            var withSpace: [UInt8] = [0x20]
            withSpace.append(contentsOf: UnsafeBufferPointer(start: b + start, count: end - start))
            withSpace.withUnsafeBufferPointer { w in
                _ = preTokenizer.scan(w.baseAddress!, from: 0, to: w.count, isFinal: true) { s, e in
                    encodeWord(w.baseAddress! + s, e - s, into: &out)
                }
            }
            return
        }
        _ = preTokenizer.scan(b, from: start, to: end, isFinal: true) { s, e in encodeWord(b + s, e - s, into: &out) }
    }

    /// Appends the ids of one pre-token.
    @inline(__always)
    func encodeWord(_ p: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int32]) {
        if n == 1 { out.append(byteIds[Int(p[0])]); return }
        let h = hashBytes(p, n)
        let hit = cache.find(p, n, hash: h)
        if hit >= 0 {
            let span = cacheSpans[hit]
            let start = Int(span >> 32), count = Int(span & 0xFFFF_FFFF)
            if count == 1 { out.append(cacheIds[start]); return }
            cacheIds.withUnsafeBufferPointer { out.append(contentsOf: UnsafeBufferPointer(rebasing: $0[start ..< start + count])) }
            return
        }
        let ids = bpe(p, n)
        out.append(contentsOf: ids)
        if cache.count < Self.cacheLimit {
            let (idx, _) = cache.findOrInsert(p, n)
            assert(idx == cacheSpans.count)
            cacheSpans.append(UInt64(cacheIds.count) << 32 | UInt64(ids.count))
            cacheIds.append(contentsOf: ids)
        }
    }

    /// Merges the bytes of one pre-token by rank.
    func bpe(_ p: UnsafePointer<UInt8>, _ n: Int) -> [Int32] {
        if ignoreMerges, let id = vocabIndex[Array(UnsafeBufferPointer(start: p, count: n))] { return [id] }
        var syms = [Int32](unsafeUninitializedCapacity: n) { buf, c in
            for i in 0 ..< n { buf[i] = byteIds[Int(p[i])] }
            c = n
        }
        @inline(__always) func rank(_ a: Int32, _ b: Int32) -> UInt64 {
            mergeMap[UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))] ?? UInt64.max
        }
        var ranks = [UInt64](repeating: .max, count: n - 1)
        for i in 0 ..< n - 1 { ranks[i] = rank(syms[i], syms[i + 1]) }
        while syms.count > 1 {
            var best = UInt64.max, at = -1
            for i in 0 ..< ranks.count where ranks[i] < best { best = ranks[i]; at = i }
            if at < 0 { break }
            syms[at] = Int32(truncatingIfNeeded: best & 0xFFFF_FFFF)
            syms.remove(at: at + 1)
            ranks.remove(at: at)
            if at > 0 { ranks[at - 1] = rank(syms[at - 1], syms[at]) }
            if at < syms.count - 1 { ranks[at] = rank(syms[at], syms[at + 1]) }
        }
        return syms
    }

    // MARK: Decoding

    /// The bytes the ids stand for (special tokens as their text). Ids outside the
    /// vocabulary are skipped.
    public func decode<S: Sequence>(_ ids: S) -> [UInt8] where S.Element == Int32 {
        var out: [UInt8] = []
        for id in ids where id >= 0 && Int(id) < vocabSize { out.append(contentsOf: tokenBytes[Int(id)]) }
        return out
    }

    /// The text the ids stand for; invalid UTF-8 (a cut multi-byte character) becomes U+FFFD.
    public func decodeString<S: Sequence>(_ ids: S) -> String where S.Element == Int32 {
        String(decoding: decode(ids), as: UTF8.self)
    }

    // MARK: Files

    /// Encodes the UTF-8 text file `input` into the token file `output` and returns the
    /// number of tokens. The input is memory-mapped and encoded in windows of a few MB,
    /// so memory stays small; the output appears under its name only when complete.
    @discardableResult
    public func encodeFile(input: String, output: String, progress: ProgressLine? = nil) throws -> Int {
        let text = try MappedTextFile(path: input)
        let writer = try TokenFileWriter(path: output, vocabSize: vocabSize, fingerprint: fingerprint)
        var out: [Int32] = []
        out.reserveCapacity(1 << 20)
        let b = text.bytes, n = text.count
        let window = 1 << 22
        progress?.start(total: Int64(n))
        do {
            try forEachSegment(b, n) { start, end, special in
                var p = start
                while p < end {
                    if addPrefixSpace {                     // rare (GPT-2 and ours: off); encode whole stretch
                        encodeSegment(b, p, end, into: &out); p = end; break
                    }
                    var w = window
                    while true {
                        let stop = min(end, p + w)
                        let q = preTokenizer.scan(b, from: p, to: stop, isFinal: stop == end) { s, e in
                            encodeWord(b + s, e - s, into: &out)
                        }
                        if q > p || stop == end { p = q; break }
                        w *= 2                              // one pre-token longer than the window
                    }
                    try writer.append(out); out.removeAll(keepingCapacity: true)
                    progress?.update(Int64(p))
                }
                if let id = special { out.append(id) }
            }
            try writer.append(out)
            try writer.finish()
        } catch {
            writer.abort()
            throw error
        }
        progress?.finish()
        return writer.count
    }
}

/// A read-only memory-mapped text file; missing, unreadable and empty files are errors.
final class MappedTextFile {
    let path: String
    let count: Int
    private let map: UnsafeMutableRawPointer
    var bytes: UnsafePointer<UInt8> { UnsafePointer(map.assumingMemoryBound(to: UInt8.self)) }

    init(path: String) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        if fd < 0 { throw DataFileError(path, "cannot open input (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw DataFileError(path, "cannot stat input") }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw DataFileError(path, "is a directory, not a text file") }
        count = Int(st.st_size)
        if count == 0 { throw DataFileError(path, "input file is empty") }
        guard let m = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0), m != MAP_FAILED else {
            throw DataFileError(path, "cannot memory-map input (\(String(cString: strerror(errno))))")
        }
        map = m
        _ = madvise(m, count, MADV_SEQUENTIAL)
    }

    deinit { munmap(map, count) }
}

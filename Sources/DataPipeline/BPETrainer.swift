// Training a byte-level BPE vocabulary.
//
// 1. Count pre-tokens: the text is read in chunks (a few MB); each chunk is split
//    into GPT-2 pre-tokens (PreTokenizer.swift), special-token literals are skipped,
//    and each distinct pre-token's byte string is counted in a hash table. Only
//    the distinct pre-tokens and their counts are kept.
// 2. Merge: every distinct pre-token starts as its bytes (ids 0...255 = byte values).
//    Repeatedly take the adjacent pair with the highest total count (count of the
//    pre-token times occurrences in it; ties go to the smaller (left id, right id)),
//    append it to the merges and, if its byte string is new, to the vocabulary, and
//    rewrite the pre-tokens that contain it. Stops at `vocabSize` ids (special
//    tokens included) or when no pair is left.
// The vocabulary is: ids 0...255 the bytes, then merged tokens in the order they
// were made, then the special tokens (by default `<|endoftext|>`, like GPT-2's last id).
// Encoding applies the merges by rank, as Hugging Face does, so these ids are what
// `tokenizers` gives for the written tokenizer.json.
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct BPETrainer {
    /// Target number of ids, special tokens included.
    public var vocabSize: Int
    /// Special tokens, appended after the merged tokens.
    public var specialTokens: [String]
    /// Bytes read per chunk while counting.
    public var chunkSize = 1 << 22
    /// Show progress lines on stderr.
    public var showProgress = false

    public init(vocabSize: Int, specialTokens: [String] = ["<|endoftext|>"]) {
        self.vocabSize = vocabSize
        self.specialTokens = specialTokens
    }

    /// Trains on UTF-8 text files, read in chunks.
    public func train(files: [String]) throws -> BPETokenizer {
        try checkVocabSize()
        let counter = PreTokenCounter(specialTokens: specialTokens)
        var total: Int64 = 0
        for f in files {
            var st = stat()
            guard stat(f, &st) == 0 else { throw DataFileError(f, "input file does not exist") }
            if (st.st_mode & S_IFMT) == S_IFDIR { throw DataFileError(f, "is a directory, not a text file") }
            if st.st_size == 0 { throw DataFileError(f, "input file is empty") }
            total += Int64(st.st_size)
        }
        let progress = showProgress ? ProgressLine("count pre-tokens") : nil
        progress?.start(total: total)
        var done: Int64 = 0
        for f in files { try counter.countFile(f, chunkSize: chunkSize, progress: progress, done: &done) }
        progress?.finish()
        return try merge(counter)
    }

    /// Trains on text in memory (tests, small inputs).
    public func train(text: String) throws -> BPETokenizer {
        try checkVocabSize()
        let counter = PreTokenCounter(specialTokens: specialTokens)
        var s = text
        s.withUTF8 { buf in
            if let base = buf.baseAddress { _ = counter.count(base, buf.count, isFinal: true) }
        }
        return try merge(counter)
    }

    private func checkVocabSize() throws {
        let least = 256 + specialTokens.count
        guard vocabSize >= least, vocabSize <= Int(Int32.max) else {
            throw DataFileError("--vocab-size", "vocabulary size \(vocabSize) must be at least \(least) "
                                + "(256 bytes + \(specialTokens.count) special)")
        }
    }

    // MARK: Merging

    private func merge(_ counter: PreTokenCounter) throws -> BPETokenizer {
        var state = MergeState(counter)
        var tokens: [[UInt8]] = (0 ..< 256).map { [UInt8($0)] }
        var tokenIndex: [[UInt8]: Int32] = [:]
        for (i, t) in tokens.enumerated() { tokenIndex[t] = Int32(i) }
        var merges: [(Int32, Int32)] = []
        let target = vocabSize - specialTokens.count
        let progress = showProgress ? ProgressLine("merge", unit: .items("tokens")) : nil
        progress?.start(total: Int64(target - 256))

        while tokens.count < target, let (a, b) = state.popMostFrequentPair() {
            let bytes = tokens[Int(a)] + tokens[Int(b)]
            let newId: Int32
            if let existing = tokenIndex[bytes] { newId = existing } else {
                newId = Int32(tokens.count); tokens.append(bytes); tokenIndex[bytes] = newId
            }
            state.merge(a, b, into: newId, mergeIndex: merges.count)
            merges.append((a, b))
            progress?.update(Int64(tokens.count - 256))
        }
        progress?.finish()

        var specials: [(content: String, id: Int32)] = []
        for s in specialTokens {
            specials.append((s, Int32(tokens.count)))
            tokens.append(Array(s.utf8))
        }
        return try BPETokenizer(tokens: tokens, merges: merges, specialTokens: specials, source: "trainer")
    }
}

/// The words being merged (the distinct pre-tokens of two or more bytes, as symbol ids in one flat array),
/// each adjacent pair's total count, the words each pair occurs in, and a max-heap of pairs by count (with
/// stale entries, skipped when popped).
private struct MergeState {
    var wordCount: [Int64] = [], wordStart: [Int] = [], wordLen: [Int] = []
    var symbols: [Int32] = []
    var pairCounts: [UInt64: Int64] = [:]
    var pairWords: [UInt64: [Int32]] = [:]
    var heap = PairHeap()
    /// The last merge that rewrote each word (a word listed twice under a pair is rewritten once).
    var stamp: [Int]

    @inline(__always) static func key(_ a: Int32, _ b: Int32) -> UInt64 { UInt64(UInt32(a)) << 32 | UInt64(UInt32(b)) }

    init(_ counter: PreTokenCounter) {
        let table = counter.table
        symbols.reserveCapacity(table.keyBytes)
        for i in 0 ..< table.count {
            let k = table.key(i)
            if k.count < 2 { continue }
            wordCount.append(counter.counts[i]); wordStart.append(symbols.count); wordLen.append(k.count)
            for b in k { symbols.append(Int32(b)) }
        }
        for w in 0 ..< wordCount.count {
            let s = wordStart[w], c = wordCount[w]
            for i in s ..< s + wordLen[w] - 1 {
                let p = Self.key(symbols[i], symbols[i + 1])
                pairCounts[p, default: 0] += c
                pairWords[p, default: []].append(Int32(w))
            }
        }
        for (p, c) in pairCounts { heap.push(count: c, pair: p) }
        stamp = [Int](repeating: -1, count: wordCount.count)
    }

    /// The pair of highest count (ties to the smaller (left id, right id)), or nil when none is left.
    mutating func popMostFrequentPair() -> (Int32, Int32)? {
        while let top = heap.pop() {
            let current = pairCounts[top.pair] ?? 0
            if current != top.count {
                if current > 0 { heap.push(count: current, pair: top.pair) }
                continue
            }
            if current <= 0 { continue }
            return (Int32(truncatingIfNeeded: top.pair >> 32), Int32(truncatingIfNeeded: top.pair & 0xFFFF_FFFF))
        }
        return nil
    }

    /// Rewrites every word containing the pair (a, b) with `newId` in its place, and updates the pair counts,
    /// the pairs' word lists and the heap.
    mutating func merge(_ a: Int32, _ b: Int32, into newId: Int32, mergeIndex: Int) {
        let pair = Self.key(a, b)
        var before: [UInt64: Int64] = [:]             // count of each touched pair before this merge
        for w32 in pairWords[pair] ?? [] {
            let w = Int(w32)
            if stamp[w] == mergeIndex { continue }
            stamp[w] = mergeIndex
            rewrite(w32, a, b, into: newId, before: &before)
        }
        pairWords[pair] = nil
        for (p, old) in before {
            let now = pairCounts[p] ?? 0
            if now <= 0 { pairCounts[p] = nil; pairWords[p] = nil } else if now > old { heap.push(count: now, pair: p) }
        }
    }

    /// One word: its pairs' counts out, (a, b) -> newId, its new pairs' counts in (recording each touched
    /// pair's count before the merge in `before`).
    private mutating func rewrite(_ w32: Int32, _ a: Int32, _ b: Int32, into newId: Int32,
                                  before: inout [UInt64: Int64]) {
        let w = Int(w32)
        let s = wordStart[w], n = wordLen[w], c = wordCount[w]
        var has = false
        for i in s ..< s + n - 1 where symbols[i] == a && symbols[i + 1] == b { has = true; break }
        if !has { return }
        for i in s ..< s + n - 1 {
            let p = Self.key(symbols[i], symbols[i + 1])
            if before[p] == nil { before[p] = pairCounts[p] ?? 0 }
            pairCounts[p, default: 0] -= c
        }
        var r = s, o = s
        while r < s + n {
            if r < s + n - 1 && symbols[r] == a && symbols[r + 1] == b { symbols[o] = newId; r += 2 } else { symbols[o] = symbols[r]; r += 1 }
            o += 1
        }
        let m = o - s
        wordLen[w] = m
        for i in s ..< s + m - 1 {
            let x = symbols[i], y = symbols[i + 1]
            let p = Self.key(x, y)
            if before[p] == nil { before[p] = pairCounts[p] ?? 0 }
            pairCounts[p, default: 0] += c
            if x == newId || y == newId { pairWords[p, default: []].append(w32) }
        }
    }
}

/// Counts distinct pre-tokens (byte strings) across chunks of text.
final class PreTokenCounter {
    let table = ByteStringTable(capacity: 1 << 16)
    var counts: [Int64] = []
    let preTokenizer = PreTokenizer()
    let matcher: SpecialTokenMatcher
    let margin: Int

    init(specialTokens: [String]) {
        matcher = SpecialTokenMatcher(specialTokens.enumerated().map { (Array($1.utf8), Int32($0)) })
        margin = max(PreTokenizer.margin, matcher.maxLength + 4)
    }

    /// Counts the pre-tokens of `b[0..<n]`; unless `isFinal`, leaves a tail that more text
    /// could change and returns where it starts.
    func count(_ b: UnsafePointer<UInt8>, _ n: Int, isFinal: Bool) -> Int {
        var p = 0
        while p < n {
            let m = matcher.next(b, from: p, to: n)
            let segmentEnd = m?.start ?? n
            let q = preTokenizer.scan(b, from: p, to: segmentEnd, isFinal: isFinal || m != nil, margin: margin) { s, e in
                let (i, inserted) = table.findOrInsert(b + s, e - s)
                if inserted { counts.append(1) } else { counts[i] += 1 }
            }
            guard let special = m, q == segmentEnd else { return q }
            if !isFinal && special.start + special.length > n - margin { return special.start }
            p = special.start + special.length
        }
        return p
    }

    /// Reads a file in chunks of `chunkSize` bytes, carrying unfinished text to the next chunk.
    func countFile(_ path: String, chunkSize: Int, progress: ProgressLine?, done: inout Int64) throws {
        let fd = open(path, O_RDONLY)
        if fd < 0 { throw DataFileError(path, "cannot open input (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        var capacity = chunkSize * 2
        var buf = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity)
        defer { buf.deallocate() }
        var have = 0
        var eof = false
        while !eof {
            if capacity - have < chunkSize {                 // a pre-token longer than a chunk
                let bigger = UnsafeMutablePointer<UInt8>.allocate(capacity: capacity * 2)
                bigger.update(from: buf, count: have); buf.deallocate(); buf = bigger; capacity *= 2
            }
            let n = read(fd, buf + have, chunkSize)
            if n < 0 {
                if errno == EINTR { continue }
                throw DataFileError(path, "read failed (\(String(cString: strerror(errno))))")
            }
            eof = n == 0
            have += n
            done += Int64(n)
            let used = count(buf, have, isFinal: eof)
            if used < have { buf.update(from: buf + used, count: have - used) }  // move the tail to the front
            have -= used
            progress?.update(done)
        }
    }
}

/// A max-heap of (count, pair): highest count first, then the smaller pair.
struct PairHeap {
    private var counts: [Int64] = []
    private var pairs: [UInt64] = []

    @inline(__always) private func above(_ i: Int, _ j: Int) -> Bool {
        counts[i] > counts[j] || (counts[i] == counts[j] && pairs[i] < pairs[j])
    }

    mutating func push(count: Int64, pair: UInt64) {
        counts.append(count); pairs.append(pair)
        var i = counts.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if !above(i, parent) { break }
            counts.swapAt(i, parent); pairs.swapAt(i, parent); i = parent
        }
    }

    mutating func pop() -> (count: Int64, pair: UInt64)? {
        guard let c0 = counts.first else { return nil }
        let p0 = pairs[0]
        let last = counts.count - 1
        counts.swapAt(0, last); pairs.swapAt(0, last)
        counts.removeLast(); pairs.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var best = i
            if l < counts.count && above(l, best) { best = l }
            if r < counts.count && above(r, best) { best = r }
            if best == i { break }
            counts.swapAt(i, best); pairs.swapAt(i, best); i = best
        }
        return (c0, p0)
    }
}

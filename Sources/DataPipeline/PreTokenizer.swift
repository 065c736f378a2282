// GPT-2 pre-tokenisation, written by hand over UTF-8 bytes. It splits text exactly
// as the regular expression used by GPT-2 and Hugging Face ByteLevel (Oniguruma):
//
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// At each position the alternatives are tried in that order:
//   - an apostrophe followed by s, t, m, d, re, ve or ll (lower case) is a token;
//   - otherwise an optional U+0020 space plus a run of letters, of numbers, or of
//     "other" characters (neither whitespace, letter nor number);
//   - otherwise a whitespace run: all of it if it ends the text; if a non-space
//     character follows, all but its last character (which then starts the next
//     token, e.g. " " before a word), or the one character if the run is that short.
// Classes: \p{L} = general category L*, \p{N} = N*, \s = the Unicode White_Space
// property (what Oniguruma's \s matches for UTF-8), all as of Unicode 16. Invalid
// UTF-8 bytes count as "other" characters one byte long (Hugging Face never sees
// them: Python strings are valid Unicode).

enum CharClass {
    static let letter: UInt8 = 1, number: UInt8 = 2, space: UInt8 = 3, other: UInt8 = 4
}

final class PreTokenizer {
    /// Class of each BMP scalar, 0 until first looked up.
    private let bmp: UnsafeMutablePointer<UInt8>

    /// A token whose end is within `margin` bytes of the end of a non-final buffer may
    /// change when more text arrives (a longer run, a contraction, the (?!\S) look-ahead).
    static let margin = 8

    /// Characters newer than this Unicode version are "other", as in Hugging Face
    /// `tokenizers` 0.23 (Oniguruma 6.9, Unicode 16). Checked by PreTokenizerTests
    /// against the installed `tokenizers`.
    static let unicodeMajorVersion = 16

    init() {
        bmp = .allocate(capacity: 0x10000)
        bmp.initialize(repeating: 0, count: 0x10000)
        for v in 0 ..< 0x80 { bmp[v] = Self.computeClass(UInt32(v)) }
    }

    deinit { bmp.deallocate() }

    static func computeClass(_ v: UInt32) -> UInt8 {
        guard let s = Unicode.Scalar(v) else { return CharClass.other }
        let p = s.properties
        if p.isWhitespace { return CharClass.space }
        // Hugging Face's Oniguruma knows Unicode 16; Swift 6.3 knows 17. Characters
        // assigned later are unassigned (so "other") to Oniguruma: treat them so.
        if let age = p.age, age.major > PreTokenizer.unicodeMajorVersion { return CharClass.other }
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return CharClass.letter
        case .decimalNumber, .letterNumber, .otherNumber:
            return CharClass.number
        default:
            return CharClass.other
        }
    }

    /// Class and byte length of the character at `p` (which is < `end`).
    @inline(__always)
    func classify(_ b: UnsafePointer<UInt8>, _ p: Int, _ end: Int) -> (UInt8, Int) {
        let c = b[p]
        if c < 0x80 { return (bmp[Int(c)], 1) }
        var len: Int, v: UInt32
        if c & 0xE0 == 0xC0 { len = 2; v = UInt32(c & 0x1F) }
        else if c & 0xF0 == 0xE0 { len = 3; v = UInt32(c & 0x0F) }
        else if c & 0xF8 == 0xF0 { len = 4; v = UInt32(c & 0x07) }
        else { return (CharClass.other, 1) }
        if p + len > end { return (CharClass.other, 1) }
        for i in 1 ..< len {
            let cc = b[p + i]
            if cc & 0xC0 != 0x80 { return (CharClass.other, 1) }
            v = v << 6 | UInt32(cc & 0x3F)
        }
        switch len {
        case 2: if v < 0x80 { return (CharClass.other, 1) }
        case 3: if v < 0x800 || (v >= 0xD800 && v <= 0xDFFF) { return (CharClass.other, 1) }
        default: if v < 0x10000 || v > 0x10FFFF { return (CharClass.other, 1) }
        }
        if v < 0x10000 {
            var k = bmp[Int(v)]
            if k == 0 { k = Self.computeClass(v); bmp[Int(v)] = k }
            return (k, len)
        }
        return (Self.computeClass(v), len)
    }

    /// End of the pre-token that starts at `p` in the text `b[..<end]`.
    @inline(__always)
    func tokenEnd(_ b: UnsafePointer<UInt8>, _ p: Int, _ end: Int) -> Int {
        let c = b[p]
        if c == 0x27 && p + 1 < end {                      // 's 't 're 've 'm 'll 'd
            let c1 = b[p + 1]
            if c1 == 0x73 || c1 == 0x74 || c1 == 0x6D || c1 == 0x64 { return p + 2 }
            if p + 2 < end {
                let c2 = b[p + 2]
                if (c1 == 0x72 && c2 == 0x65) || (c1 == 0x76 && c2 == 0x65) || (c1 == 0x6C && c2 == 0x6C) { return p + 3 }
            }
        }
        var (k, len) = classify(b, p, end)
        var q = p + len
        if c == 0x20 && q < end {                           // ' ?' before a letter, number or other run
            let (k1, len1) = classify(b, q, end)
            if k1 != CharClass.space { k = k1; q += len1 }
        }
        if k != CharClass.space {
            while q < end {
                let (kk, l) = classify(b, q, end)
                if kk != k { break }
                q += l
            }
            return q
        }
        var last = p, n = 1                                 // whitespace run
        while q < end {
            let (kk, l) = classify(b, q, end)
            if kk != CharClass.space { break }
            last = q; q += l; n += 1
        }
        if q == end || n == 1 { return q }                  // \s+(?!\S) at the end, or \s+ for one character
        return last                                         // \s+(?!\S): leave the last one for the next token
    }

    /// Calls `body(start, end)` for each pre-token of `b[start..<end]`. When `isFinal` is
    /// false, stops before the first token that more text could change and returns its
    /// start; otherwise returns `end`.
    @inline(__always)
    func scan(_ b: UnsafePointer<UInt8>, from start: Int, to end: Int, isFinal: Bool, margin: Int = PreTokenizer.margin,
              _ body: (Int, Int) -> Void) -> Int {
        let safe = isFinal ? end : end - margin
        var p = start
        while p < end {
            let q = tokenEnd(b, p, end)
            if q > safe { return p }
            body(p, q)
            p = q
        }
        return p
    }
}

/// Finds the literal special tokens (e.g. `<|endoftext|>`) in text, leftmost first and
/// longest at a position, as Hugging Face's added-token matching does.
struct SpecialTokenMatcher {
    let tokens: [(bytes: [UInt8], id: Int32)]
    private var isFirstByte = [Bool](repeating: false, count: 256)
    let maxLength: Int

    init(_ tokens: [(bytes: [UInt8], id: Int32)]) {
        self.tokens = tokens.filter { !$0.bytes.isEmpty }.sorted { $0.bytes.count > $1.bytes.count }
        for t in self.tokens { isFirstByte[Int(t.bytes[0])] = true }
        maxLength = self.tokens.map { $0.bytes.count }.max() ?? 0
    }

    var isEmpty: Bool { tokens.isEmpty }

    /// The first special token in `b[from..<end]`: its start, length and id.
    func next(_ b: UnsafePointer<UInt8>, from: Int, to end: Int) -> (start: Int, length: Int, id: Int32)? {
        if tokens.isEmpty { return nil }
        var p = from
        while p < end {
            if isFirstByte[Int(b[p])] {
                for t in tokens where p + t.bytes.count <= end {
                    let match = t.bytes.withUnsafeBufferPointer { memeq($0.baseAddress!, b + p, $0.count) }
                    if match { return (p, t.bytes.count, t.id) }
                }
            }
            p += 1
        }
        return nil
    }
}

// Whether a text file is valid UTF-8, read in chunks. Byte-level BPE takes any bytes and gives them
// back unchanged, so invalid text is not an error here; but other tools (Hugging Face `tokenizers`
// among them) cannot read it, so `data prepare` says where it is.
import Foundation

public enum UTF8Validation {
    /// Where a file stops being UTF-8: the byte offset of the first invalid sequence, and how many there are.
    public struct Finding: Equatable {
        public let firstOffset: Int64
        public let invalidSequences: Int
    }

    /// The invalid sequences of the file at `path` (nil when it is all valid UTF-8). Overlong forms,
    /// surrogates, code points above U+10FFFF, stray continuation bytes and a sequence cut by the end of
    /// the file are invalid (RFC 3629); each maximal subpart counts once, as decoders that replace
    /// invalid input with U+FFFD count them (Python's `errors="replace"`).
    public static func check(path: String, chunkSize: Int = 1 << 22) throws -> Finding? {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw DataFileError(path, "cannot open input") }
        defer { try? handle.close() }
        var first: Int64? = nil, count = 0
        var carry: [UInt8] = []          // an incomplete sequence at the end of the previous chunk
        var base: Int64 = 0              // file offset of carry[0] (or of the chunk when carry is empty)
        while true {
            let chunk = handle.readData(ofLength: chunkSize)
            let last = chunk.isEmpty
            let bytes = carry + [UInt8](chunk)
            var i = 0
            scan: while i < bytes.count {
                let b = bytes[i]
                if b < 0x80 { i += 1; continue }
                let length: Int, second: ClosedRange<UInt8>
                switch b {
                case 0xC2 ... 0xDF: length = 2; second = 0x80 ... 0xBF
                case 0xE0: length = 3; second = 0xA0 ... 0xBF
                case 0xE1 ... 0xEC, 0xEE ... 0xEF: length = 3; second = 0x80 ... 0xBF
                case 0xED: length = 3; second = 0x80 ... 0x9F
                case 0xF0: length = 4; second = 0x90 ... 0xBF
                case 0xF1 ... 0xF3: length = 4; second = 0x80 ... 0xBF
                case 0xF4: length = 4; second = 0x80 ... 0x8F
                default: length = 0; second = 0 ... 0
                }
                // The longest prefix of a well-formed sequence (its "maximal subpart", as decoders replace
                // it with one U+FFFD): one invalid sequence when it is not the whole sequence.
                var j = length > 0 ? 1 : 0
                while j > 0 && j < length {
                    if i + j >= bytes.count {
                        if !last { break scan }    // finish it with the next chunk
                        break
                    }
                    guard (j == 1 ? second : 0x80 ... 0xBF).contains(bytes[i + j]) else { break }
                    j += 1
                }
                if j == length && length > 0 { i += length; continue }
                if first == nil { first = base + Int64(i) }
                count += 1
                i += max(j, 1)
            }
            if last { break }
            carry = Array(bytes[i...])
            base += Int64(i)
        }
        return first.map { Finding(firstOffset: $0, invalidSequences: count) }
    }
}

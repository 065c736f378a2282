// GPT-2's byte-to-unicode table, as Hugging Face `tokenizers` ByteLevel uses it.
// Every byte maps to a printable character: bytes '!'...'~', '¡'...'¬' and '®'...'ÿ'
// map to themselves, the other 68 bytes (controls, space, DEL, NBSP, soft hyphen)
// to U+0100 and up in byte order. So byte 0x20 (space) is 'Ġ' and 0x0A is 'Ċ'.

public enum ByteLevel {
    /// `byteToScalar[b]` is the character that stands for byte `b` in vocabularies.
    public static let byteToScalar: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: "\0", count: 256)
        var next: UInt32 = 256
        for b in 0 ..< 256 {
            let printable = (0x21 ... 0x7E).contains(b) || (0xA1 ... 0xAC).contains(b) || (0xAE ... 0xFF).contains(b)
            if printable { table[b] = Unicode.Scalar(UInt32(b))! } else { table[b] = Unicode.Scalar(next)!; next += 1 }
        }
        return table
    }()

    /// The inverse of `byteToScalar`.
    public static let scalarToByte: [UInt32: UInt8] = {
        var map: [UInt32: UInt8] = [:]
        for (b, s) in byteToScalar.enumerated() { map[s.value] = UInt8(b) }
        return map
    }()

    /// The vocabulary spelling of a byte string.
    public static func encode<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(byteToScalar[Int(b)]) }
        return String(s)
    }

    /// The bytes a vocabulary spelling stands for, or nil if a character is not in the table.
    public static func decode(_ token: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(token.unicodeScalars.count)
        for s in token.unicodeScalars {
            guard let b = scalarToByte[s.value] else { return nil }
            out.append(b)
        }
        return out
    }
}

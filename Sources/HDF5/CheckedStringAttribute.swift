// String attributes with a CRC-32 beside them. A variable-length string's bytes live in the
// file's global heap, which no HDF5 file format checksums: a flipped byte in a checkpoint's
// `config` reads as another configuration (fuzz seed metrics 568). Fixed-length strings would
// sit in the (checksummed) object header, but h5py reads them as bytes, not `str`; so the
// string stays variable-length and its CRC-32 goes into the int64 attribute `<name>_crc32`,
// which Python checks with `zlib.crc32(value.encode())`.

/// CRC-32 (ISO-HDLC, as zlib's `crc32`).
public enum CRC32 {
    private static let table: [UInt32] = (0 ..< 256).map { n -> UInt32 in
        (0 ..< 8).reduce(UInt32(n)) { c, _ in c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
    }

    public static func checksum<Bytes: Sequence>(_ bytes: Bytes) -> UInt32 where Bytes.Element == UInt8 {
        ~bytes.reduce(~UInt32(0)) { c, b in table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
    }
}

extension H5Object {
    /// Writes `value` as `setAttribute` does, and its CRC-32 as `<name>_crc32`.
    public func setCheckedAttribute(_ name: String, _ value: String) throws {
        try setAttribute(name, value)
        try setAttribute(name + "_crc32", Int64(CRC32.checksum(value.utf8)))
    }

    /// Reads a string attribute and, when it has a `<name>_crc32` beside it (files written before
    /// the checksums have none), refuses a value that does not match it.
    public func checkedStringAttribute(_ name: String) throws -> String {
        let value = try stringAttribute(name)
        guard try hasAttribute(name + "_crc32") else { return value }
        let stored = try int64Attribute(name + "_crc32")
        guard stored == Int64(CRC32.checksum(value.utf8)) else {
            throw HDF5Error(file: filePath, object: "\(objectPath) @\(name)", operation: "read attribute",
                            detail: "it fails its CRC-32 checksum (@\(name)_crc32): the file is damaged")
        }
        return value
    }

    /// Removes the attribute and its CRC-32, if there.
    public func removeCheckedAttribute(_ name: String) throws {
        try removeAttribute(name)
        try removeAttribute(name + "_crc32")
    }
}

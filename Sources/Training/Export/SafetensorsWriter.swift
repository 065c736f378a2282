// The safetensors format, written by hand (no dependency): 8 bytes little-endian u64 N, then N bytes of
// JSON header {"__metadata__": {string: string}, "<name>": {"dtype": "F32", "shape": [...],
// "data_offsets": [begin, end]}, ...} padded with spaces to a multiple of 8, then the tensors' bytes,
// little-endian, back to back in header order (offsets relative to the end of the header).
// The file appears under its name only when complete (temporary name, fsync, rename).
import Foundation

public enum SafetensorsWriter {
    public struct Entry {
        public var name: String
        public var shape: [Int]
        public init(name: String, shape: [Int]) { self.name = name; self.shape = shape }
        var count: Int { shape.reduce(1, *) }
    }

    /// The header bytes (length prefix included) for `entries` in order.
    public static func header(_ entries: [Entry], metadata: [String: String]) -> [UInt8] {
        func quote(_ s: String) -> String {
            String(decoding: try! JSONSerialization.data(withJSONObject: [s], options: [.withoutEscapingSlashes]), as: UTF8.self)
                .dropFirst().dropLast().description
        }
        var parts: [String] = []
        if !metadata.isEmpty {
            parts.append("\"__metadata__\":{" + metadata.keys.sorted().map { "\(quote($0)):\(quote(metadata[$0]!))" }.joined(separator: ",") + "}")
        }
        var offset = 0
        for e in entries {
            let end = offset + 4 * e.count
            parts.append("\(quote(e.name)):{\"dtype\":\"F32\",\"shape\":[\(e.shape.map(String.init).joined(separator: ","))],"
                         + "\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        var json = Array(("{" + parts.joined(separator: ",") + "}").utf8)
        while (8 + json.count) % 8 != 0 { json.append(0x20) }
        var n = UInt64(json.count).littleEndian
        return withUnsafeBytes(of: &n) { Array($0) } + json
    }

    /// Writes `entries` to `path`; `values(i)` gives entry i's float32 values (row-major, `count` of them).
    public static func write(to path: String, entries: [Entry], metadata: [String: String] = [:],
                             values: (Int) throws -> [Float]) throws {
        let tmp = URL(fileURLWithPath: path).deletingLastPathComponent()
            .appendingPathComponent("." + URL(fileURLWithPath: path).lastPathComponent + ".tmp-\(getpid())").path
        guard FileManager.default.createFile(atPath: tmp, contents: nil), let fh = FileHandle(forWritingAtPath: tmp) else {
            throw TrainingError("\(path): cannot create the file")
        }
        do {
            try fh.write(contentsOf: header(entries, metadata: metadata))
            for (i, e) in entries.enumerated() {
                let v = try values(i)
                guard v.count == e.count else { throw TrainingError("\(path): tensor \(e.name) has \(v.count) values, expected \(e.count)") }
                var bytes = [UInt8](repeating: 0, count: 4 * v.count)
                bytes.withUnsafeMutableBytes { raw in
                    for (j, x) in v.enumerated() { raw.storeBytes(of: x.bitPattern.littleEndian, toByteOffset: 4 * j, as: UInt32.self) }
                }
                try fh.write(contentsOf: bytes)
            }
            try fh.synchronize()
            try fh.close()
            guard rename(tmp, path) == 0 else { throw TrainingError("\(path): rename failed: \(String(cString: strerror(errno)))") }
        } catch {
            try? fh.close()
            unlink(tmp)
            throw error
        }
    }
}

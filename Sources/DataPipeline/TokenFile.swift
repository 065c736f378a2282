// Token files (SPEC section 8): a 64-byte header, then little-endian token ids.
//
//   0 ..< 8    "MOETOKS1"
//   8 ..< 12   uint32 version = 1
//   12 ..< 16  uint32 bytes per token: 2 (vocabulary <= 65536) or 4
//   16 ..< 24  uint64 token count
//   24 ..< 28  uint32 vocabulary size
//   28 ..< 36  uint64 tokenizer fingerprint (TokenizerFingerprint.swift; 0 = unknown)
//   36 ..< 64  zero
//
// `TokenFileWriter` streams ids to a temporary file in the destination's
// directory and renames it on `finish()`; `TokenFile` memory-maps a file and
// checks its header against its size.
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The fixed header of a token file.
public struct TokenFileHeader: Equatable {
    public static let size = 64
    public static let magic: [UInt8] = Array("MOETOKS1".utf8)
    public static let currentVersion: UInt32 = 1

    public var version: UInt32
    public var bytesPerToken: Int
    public var count: Int
    public var vocabSize: Int
    /// SPEC section 8: the first 8 bytes of the SHA-256 of the tokenizer.json that encoded the tokens; 0 = unknown.
    public var fingerprint: UInt64

    public init(count: Int, vocabSize: Int, fingerprint: UInt64 = 0) {
        self.version = Self.currentVersion
        self.bytesPerToken = vocabSize <= 65536 ? 2 : 4
        self.count = count
        self.vocabSize = vocabSize
        self.fingerprint = fingerprint
    }

    /// The 64 header bytes.
    public var bytes: [UInt8] {
        var out = Self.magic
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        put(version); put(UInt32(bytesPerToken)); put(UInt64(count)); put(UInt32(vocabSize)); put(fingerprint)
        out.append(contentsOf: [UInt8](repeating: 0, count: Self.size - out.count))
        return out
    }
}

// MARK: - Reader

/// A memory-mapped token file. Opening checks magic, version, bytes per token, the file size against
/// the header count and (unless `checkIDs` is false) that every id is below the vocabulary size: an id
/// outside it (a bit flip, a file written by another tool) would index past the embedding, so it is
/// refused here, naming the file, the position and the id, before anything is allocated or written.
public final class TokenFile: TokenSource {
    public let path: String
    public let header: TokenFileHeader
    public var count: Int { header.count }
    public var vocabSize: Int { header.vocabSize }
    public var bytesPerToken: Int { header.bytesPerToken }
    /// The tokenizer fingerprint of the header (0: unknown, an old file).
    public var fingerprint: UInt64 { header.fingerprint }

    private let mapping: UnsafeMutableRawPointer?
    private let mappedLength: Int
    private let payload: UnsafeRawPointer?          // first token

    /// `checkIDs: false` reads only the header (callers that need the vocabulary size, not the tokens).
    public init(path: String, checkIDs: Bool = true) throws {
        self.path = path
        let fd = open(path, O_RDONLY)
        if fd < 0 { throw DataFileError(path, "cannot open token file (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw DataFileError(path, "cannot stat token file") }
        if (st.st_mode & S_IFMT) == S_IFDIR { throw DataFileError(path, "is a directory, not a token file") }
        let size = Int(st.st_size)
        if size < TokenFileHeader.size {
            throw DataFileError(path, "not a token file: \(size) bytes, shorter than the \(TokenFileHeader.size)-byte header")
        }
        guard let map = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), map != MAP_FAILED else {
            throw DataFileError(path, "cannot memory-map token file (\(String(cString: strerror(errno))))")
        }
        do {
            let raw = UnsafeRawPointer(map)
            let magic = Array(UnsafeRawBufferPointer(start: raw, count: 8))
            guard magic == TokenFileHeader.magic else {
                throw DataFileError(path, "not a token file: magic is not MOETOKS1 (make one with moe-dist data encode)")
            }
            func u32(_ o: Int) -> UInt32 { UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
            let version = u32(8), bpt = u32(12), vocab = u32(24)
            let count = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
            guard version == TokenFileHeader.currentVersion else {
                throw DataFileError(path, "unsupported token file version \(version) (this build reads version 1)")
            }
            guard bpt == 2 || bpt == 4 else {
                throw DataFileError(path, "bad bytes per token \(bpt) (must be 2 or 4)")
            }
            guard vocab > 0, bpt == 4 || vocab <= 65536 else {
                throw DataFileError(path, "bad vocabulary size \(vocab) for \(bpt) bytes per token")
            }
            let payload = UInt64(size - TokenFileHeader.size)
            guard count <= payload / UInt64(bpt), payload == count * UInt64(bpt) else {
                throw DataFileError(path, "size mismatch: header says \(count) tokens of \(bpt) bytes "
                                    + "(\(UInt64(TokenFileHeader.size) &+ count &* UInt64(bpt)) bytes) but the file has \(size) bytes; "
                                    + "truncated or damaged, re-create it")
            }
            let fingerprint = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 28, as: UInt64.self))
            var h = TokenFileHeader(count: Int(count), vocabSize: Int(vocab), fingerprint: fingerprint)
            h.bytesPerToken = Int(bpt); h.version = version
            self.header = h
        } catch {
            munmap(map, size)
            throw error
        }
        self.mapping = map
        self.mappedLength = size
        self.payload = UnsafeRawPointer(map) + TokenFileHeader.size
        if checkIDs { try validate() }
    }

    deinit { if let m = mapping { munmap(m, mappedLength) } }

    /// The id at `index` (no bounds check beyond a precondition in debug builds).
    @inline(__always) public subscript(index: Int) -> Int32 {
        assert(index >= 0 && index < count)
        if bytesPerToken == 2 {
            return Int32(UInt16(littleEndian: payload!.loadUnaligned(fromByteOffset: index * 2, as: UInt16.self)))
        }
        return Int32(bitPattern: UInt32(littleEndian: payload!.loadUnaligned(fromByteOffset: index * 4, as: UInt32.self)))
    }

    public func copyTokens(_ range: Range<Int>, into out: UnsafeMutablePointer<Int32>) {
        precondition(range.lowerBound >= 0 && range.upperBound <= count, "token range \(range) outside 0..<\(count)")
        guard let t = payload else { return }
        if bytesPerToken == 2 {
            let p = t.advanced(by: range.lowerBound * 2)
            for i in 0 ..< range.count {
                out[i] = Int32(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)))
            }
        } else {
            let p = t.advanced(by: range.lowerBound * 4)
            for i in 0 ..< range.count {
                out[i] = Int32(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)))
            }
        }
    }

    /// Checks every id against the vocabulary size; throws naming the first id that is not below it.
    /// One pass over the mapping in blocks: the maximum of a block (a loop the compiler vectorises, about
    /// memory speed) is compared once; only a block that fails is searched for its first bad id.
    public func validate() throws {
        guard let t = payload, count > 0 else { return }
        let v = UInt32(vocabSize), block = 1 << 16
        var start = 0
        while start < count {
            let n = min(block, count - start)
            let largest: UInt32
            if bytesPerToken == 2 {
                // The payload starts 64 bytes into a page-aligned mapping: aligned for UInt16 and UInt32.
                largest = UInt32(Self.maximum(UnsafeBufferPointer(start: t.assumingMemoryBound(to: UInt16.self) + start, count: n)))
            } else {
                largest = Self.maximum(UnsafeBufferPointer(start: t.assumingMemoryBound(to: UInt32.self) + start, count: n))
            }
            if largest >= v || TokenFile.bigEndianHost {
                for i in start ..< start + n where UInt32(bitPattern: self[i]) >= v {
                    throw DataFileError(path, "token \(i) has id \(UInt32(bitPattern: self[i])), not below the vocabulary "
                                        + "size \(vocabSize) of its header (byte offset \(TokenFileHeader.size + i * bytesPerToken)); "
                                        + "the file is damaged or was written for another vocabulary")
                }
            }
            start += n
        }
    }

    /// The block maxima read ids in host order, which is the file's (little-endian) on every supported
    /// host; a big-endian one would search every block id by id.
    #if _endian(big)
    private static let bigEndianHost = true
    #else
    private static let bigEndianHost = false
    #endif

    @inline(__always) private static func maximum<T: FixedWidthInteger & UnsignedInteger>(_ b: UnsafeBufferPointer<T>) -> T {
        var m: T = 0
        for x in b { m = x > m ? x : m }
        return m
    }

    /// Tokens `range` as an array (convenience for tests and tools).
    public func tokens(_ range: Range<Int>) -> [Int32] {
        [Int32](unsafeUninitializedCapacity: range.count) { buf, n in
            if range.count > 0 { copyTokens(range, into: buf.baseAddress!) }
            n = range.count
        }
    }
}

// MARK: - Writer

/// Streams ids into a token file. Ids go to `<dir>/.<name>.partial-<pid>` and the file
/// is renamed to `path` by `finish()`; `abort()` (or deinit without `finish()`)
/// removes the partial file, so nothing half-written ever carries the final name.
public final class TokenFileWriter {
    public let path: String
    public let vocabSize: Int
    public let bytesPerToken: Int
    public let fingerprint: UInt64
    public private(set) var count = 0

    private let tempPath: String
    private var fd: Int32
    private var buffer: [UInt8] = []
    private static let flushBytes = 1 << 20

    /// `fingerprint`: the tokenizer fingerprint for the header (0 if the tokens come from no tokenizer.json).
    public init(path: String, vocabSize: Int, fingerprint: UInt64 = 0) throws {
        guard vocabSize > 0, vocabSize <= Int(UInt32.max) else {
            throw DataFileError(path, "bad vocabulary size \(vocabSize)")
        }
        self.path = path
        self.vocabSize = vocabSize
        self.fingerprint = fingerprint
        self.bytesPerToken = TokenFileHeader(count: 0, vocabSize: vocabSize).bytesPerToken
        let url = URL(fileURLWithPath: path)
        self.tempPath = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).partial-\(getpid())").path
        fd = open(tempPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        if fd < 0 { throw DataFileError(path, "cannot create output (\(String(cString: strerror(errno))))") }
        buffer.reserveCapacity(Self.flushBytes + 64)
        buffer.append(contentsOf: TokenFileHeader(count: 0, vocabSize: vocabSize).bytes)  // rewritten by finish()
    }

    deinit { if fd >= 0 { abort() } }

    /// Appends ids; throws (and leaves the writer usable for `abort()`) if an id is out of range.
    public func append(_ ids: UnsafeBufferPointer<Int32>) throws {
        precondition(fd >= 0, "TokenFileWriter used after finish() or abort()")
        let v = UInt32(vocabSize)
        for (i, id) in ids.enumerated() where UInt32(bitPattern: id) >= v {
            throw DataFileError(path, "token \(count + i) has id \(id), not below the vocabulary size \(vocabSize)")
        }
        if bytesPerToken == 2 {
            for id in ids { let u = UInt16(truncatingIfNeeded: id); buffer.append(UInt8(u & 0xff)); buffer.append(UInt8(u >> 8)) }
        } else {
            for id in ids {
                let u = UInt32(bitPattern: id)
                buffer.append(UInt8(u & 0xff)); buffer.append(UInt8((u >> 8) & 0xff))
                buffer.append(UInt8((u >> 16) & 0xff)); buffer.append(UInt8(u >> 24))
            }
        }
        count += ids.count
        if buffer.count >= Self.flushBytes { try flush() }
    }

    public func append(_ ids: [Int32]) throws { try ids.withUnsafeBufferPointer { try append($0) } }

    private func flush() throws {
        try buffer.withUnsafeBytes { raw in
            var off = 0
            while off < raw.count {
                let n = write(fd, raw.baseAddress! + off, raw.count - off)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw DataFileError(path, "write failed (\(String(cString: strerror(errno))))")
                }
                off += n
            }
        }
        buffer.removeAll(keepingCapacity: true)
    }

    /// Writes the final header and renames the partial file to `path`.
    public func finish() throws {
        precondition(fd >= 0, "TokenFileWriter finished twice")
        do {
            try flush()
            let header = TokenFileHeader(count: count, vocabSize: vocabSize, fingerprint: fingerprint).bytes
            let n = header.withUnsafeBytes { pwrite(fd, $0.baseAddress!, $0.count, 0) }
            guard n == header.count else { throw DataFileError(path, "cannot write header (\(String(cString: strerror(errno))))") }
            guard close(fd) == 0 else { fd = -1; throw DataFileError(path, "close failed (\(String(cString: strerror(errno))))") }
            fd = -1
            guard rename(tempPath, path) == 0 else {
                throw DataFileError(path, "cannot rename \(tempPath) into place (\(String(cString: strerror(errno))))")
            }
        } catch {
            abort()
            throw error
        }
    }

    /// Discards everything written so far.
    public func abort() {
        if fd >= 0 { close(fd); fd = -1 }
        unlink(tempPath)
    }
}

/// Writes `data` to `path` through a temporary file in the same directory and a rename.
public func writeFileAtomically(_ data: Data, to path: String) throws {
    let url = URL(fileURLWithPath: path)
    let temp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).partial-\(getpid())")
    do {
        try data.write(to: temp)
    } catch {
        try? FileManager.default.removeItem(at: temp)
        throw DataFileError(path, "cannot write (\(error.localizedDescription))")
    }
    guard rename(temp.path, path) == 0 else {
        let reason = String(cString: strerror(errno))
        unlink(temp.path)
        throw DataFileError(path, "cannot rename into place (\(reason))")
    }
}

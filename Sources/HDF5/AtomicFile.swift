// AtomicFile: write an HDF5 file so that it appears under its final name only
// when complete (SPEC section 6: a crash mid-write leaves no file that looks valid).
import CHDF5
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public enum AtomicFile {
    /// The temporary name used while writing `path`: `.<name>.tmp-<pid>` in the same
    /// directory (same file system, so the final rename is atomic; hidden, and not
    /// ending in `.h5`, so nothing mistakes it for a finished file).
    public static func temporaryPath(for path: String) -> String {
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { String(path[...$0]) } ?? ""
        let name = slash.map { String(path[path.index(after: $0)...]) } ?? path
        return "\(dir).\(name).tmp-\(getpid())"
    }

    /// Creates an HDF5 file at a temporary name, lets `body` fill it, then flushes,
    /// closes, fsyncs and renames it to `path` (replacing any file there), and fsyncs
    /// the directory. If `body` or any step throws, the temporary file is removed and
    /// `path` is left as it was.
    ///
    /// The file is closed when `body` returns: groups and datasets obtained inside it
    /// must not be used afterwards. `metadataChecksums`: as in `H5File.create`.
    @discardableResult
    public static func write<R>(to path: String, fileLocking: Bool = true, metadataChecksums: Bool = false,
                                _ body: (H5File) throws -> R) throws -> R {
        let tmp = temporaryPath(for: path)
        unlink(tmp)  // a leftover from a crashed writer with the same pid
        do {
            let file = try H5File.create(path: tmp, fileLocking: fileLocking, metadataChecksums: metadataChecksums)
            let result: R
            do {
                result = try body(file)
                try file.flush()
            } catch {
                file.close()
                throw error
            }
            file.close()
            try fsyncPath(tmp)
            if rename(tmp, path) != 0 {
                throw HDF5Error(file: path, object: "", operation: "rename \(tmp) to",
                                detail: String(cString: strerror(errno)))
            }
            syncDirectory(of: path)
            return result
        } catch {
            unlink(tmp)
            throw error
        }
    }

    /// fsync the directory holding `path` so the rename itself is durable (best effort).
    private static func syncDirectory(of path: String) {
        let dir = path.lastIndex(of: "/").map { String(path[..<$0]) }.map { $0.isEmpty ? "/" : $0 } ?? "."
        let fd = open(dir, O_RDONLY)
        if fd >= 0 { _ = fsync(fd); _ = close(fd) }
    }
}

// H5File: an open HDF5 file; it is also its root group ("/").
import CHDF5
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An open HDF5 file. As an `H5Group` it is the root group, so attributes set on
/// it are root attributes and `createGroup("/params")` works directly.
///
/// Closing is "strong": `close()` (or `deinit`) closes every group and dataset of
/// the file that is still open; later use of those objects throws "the file is closed".
///
/// **File locking and concurrent readers** (HDF5 1.10.8 here; h5py 3.16 with HDF5 2.0):
/// by default HDF5 takes an exclusive `flock` on a file opened for writing, and a
/// reader such as `h5py.File(path, "r")` then fails with "unable to lock file,
/// errno = 11" for as long as the writer keeps the file open. A writer that wants
/// readers to look in while it runs (the metrics history) passes `fileLocking: false`;
/// readers then open with plain `h5py.File(path, "r")`. They must open the file
/// afresh to see rows appended since (HDF5 caches metadata), and the writer must
/// flush after each change (`flush()`), so the bytes on disk are a complete file
/// between changes. A reader that opens while a change or a flush is being written
/// can see an inconsistent file: measured with a writer appending ~900 rows/s
/// continuously, about 1% of h5py opens failed while reading ("addr overflow")
/// and about half saw datasets of one group with unequal lengths. Readers should
/// therefore retry a failed open/read and cut a group to its shortest dataset
/// (at the trainer's real rate, an append every few seconds taking about a
/// millisecond, such collisions are rare). Without locks, nothing stops two
/// writers: only one process may write a given file.
///
/// SWMR (`H5F_ACC_SWMR_WRITE`, needing libver "latest") was tried and not used: it
/// works only for readers that ask for it (`h5py.File(path, "r", swmr=True)`); a plain
/// `h5py.File(path, "r")` fails with "file is already open for write (may use
/// <h5clear file> to clear file consistency flags)", and a writer that crashes leaves
/// those flags set, so the file (and a resumed run) cannot open it until `h5clear -s`.
public final class H5File: H5Group {
    /// The path the file was created or opened under.
    public let path: String
    /// Whether the file was opened read-only.
    public let readOnly: Bool
    public private(set) var isOpen: Bool = true

    private init(fileID: hid_t, path: String, readOnly: Bool) {
        self.path = path; self.readOnly = readOnly
        super.init(id: fileID, objectPath: "/", owner: nil)
    }

    deinit { close() }

    /// Creates (truncating any existing file) an HDF5 file at `path`.
    /// `fileLocking: false` lets readers open the file while this writer has it open (see above).
    /// `metadataChecksums`: write the file format of HDF5 1.8 (superblock v2, object headers v2), whose
    /// metadata (attributes included) carries checksums, so a damaged attribute fails to read instead of
    /// reading as another value; the default, earliest format has none. Not the "latest" format, whose
    /// superblock v3 marks files open for writing and leaves them unopenable after a crashed writer.
    public static func create(path: String, fileLocking: Bool = true, metadataChecksums: Bool = false) throws -> H5File {
        H5Library.ensureReady()
        let fapl = try accessList(path: path, fileLocking: fileLocking, operation: "create file")
        defer { H5Pclose(fapl) }
        if metadataChecksums && H5Pset_libver_bounds(fapl, H5F_LIBVER_V18, H5F_LIBVER_V18) < 0 {
            throw h5Failure(path, "", "create file (HDF5 1.8 format)")
        }
        let fid = try h5Check(H5Fcreate(path, moe_h5_f_acc_trunc(), moe_h5_p_default(), fapl), path, "", "create file")
        return H5File(fileID: fid, path: path, readOnly: false)
    }

    /// Opens an existing HDF5 file. A missing, unreadable or non-HDF5 file, or one cut
    /// short, throws an `HDF5Error` that names the path.
    public static func open(path: String, readOnly: Bool = true, fileLocking: Bool = true) throws -> H5File {
        H5Library.ensureReady()
        let operation = readOnly ? "open file (read-only)" : "open file (read-write)"
        if access(path, F_OK) != 0 {
            throw HDF5Error(file: path, object: "", operation: operation, detail: "no such file")
        }
        if access(path, readOnly ? R_OK : (R_OK | W_OK)) != 0 {
            throw HDF5Error(file: path, object: "", operation: operation,
                            detail: "permission denied (\(String(cString: strerror(errno))))")
        }
        let isHDF5 = H5Fis_hdf5(path)
        if isHDF5 == 0 {
            throw HDF5Error(file: path, object: "", operation: operation,
                            detail: "not an HDF5 file (no HDF5 signature found)")
        }
        H5Library.takeErrorStack() // a negative answer above is reported by H5Fopen below
        let fapl = try accessList(path: path, fileLocking: fileLocking, operation: operation)
        defer { H5Pclose(fapl) }
        let flags = readOnly ? moe_h5_f_acc_rdonly() : moe_h5_f_acc_rdwr()
        let fid = H5Fopen(path, flags, fapl)
        if fid < 0 {
            throw h5Failure(path, "", operation, "the file is damaged, truncated or locked by a writer")
        }
        return H5File(fileID: fid, path: path, readOnly: readOnly)
    }

    /// Writes every buffered change to the operating system (not an fsync: see `AtomicFile`
    /// and `syncToDisk()`).
    public func flush() throws {
        try requireOpen("flush file")
        try h5Check(H5Fflush(id, H5F_SCOPE_GLOBAL), path, "", "flush file")
    }

    /// Flushes, then asks the operating system to put the file's bytes on disk (fsync).
    public func syncToDisk() throws {
        try flush()
        try fsyncPath(path)
    }

    /// Closes the file and every object of it that is still open. Idempotent.
    public func close() {
        guard isOpen else { return }
        isOpen = false
        H5Fclose(id)
        H5Library.takeErrorStack()
    }

    private static func accessList(path: String, fileLocking: Bool, operation: String) throws -> hid_t {
        let fapl = try h5Check(H5Pcreate(moe_h5_p_file_access()), path, "", operation)
        if H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0
            || H5Pset_file_locking(fapl, fileLocking, true) < 0 {
            H5Pclose(fapl)
            throw h5Failure(path, "", operation)
        }
        return fapl
    }
}

/// fsync(2) the file at `path` (opened read-only, which Linux and macOS allow).
func fsyncPath(_ path: String) throws {
    let fd = open(path, O_RDONLY)
    if fd < 0 {
        throw HDF5Error(file: path, object: "", operation: "open for fsync", detail: String(cString: strerror(errno)))
    }
    defer { _ = close(fd) }
    if fsync(fd) != 0 {
        throw HDF5Error(file: path, object: "", operation: "fsync", detail: String(cString: strerror(errno)))
    }
}

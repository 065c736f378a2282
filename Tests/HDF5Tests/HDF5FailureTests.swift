// Failures: bad files throw errors that name the path; the atomic writer leaves
// nothing behind when it fails; readers and a writer that keeps the file open.
import Foundation
import XCTest
import TestSupport
@testable import HDF5

final class HDF5FailureTests: XCTestCase {
    func testOpeningMissingFileNamesThePath() throws {
        let path = try temporaryDirectory(self) + "/missing.h5"
        XCTAssertThrowsError(try H5File.open(path: path)) { err in
            XCTAssertTrue(err is HDF5Error)
            XCTAssertTrue("\(err)".contains(path) && "\(err)".contains("no such file"), "\(err)")
        }
    }

    func testOpeningNonHDF5FileNamesThePath() throws {
        let path = try temporaryDirectory(self) + "/text.h5"
        try "this is not HDF5\n".write(toFile: path, atomically: false, encoding: .utf8)
        XCTAssertThrowsError(try H5File.open(path: path)) { err in
            XCTAssertTrue("\(err)".contains(path) && "\(err)".contains("not an HDF5 file"), "\(err)")
        }
        let empty = path + ".empty"
        _ = FileManager.default.createFile(atPath: empty, contents: Data())
        XCTAssertThrowsError(try H5File.open(path: empty)) { XCTAssertTrue("\($0)".contains(empty), "\($0)") }
    }

    func testOpeningTruncatedFileNamesThePath() throws {
        let path = try temporaryDirectory(self) + "/cut.h5"
        do {
            let f = try H5File.create(path: path)
            try f.createDataset("params/embed", values: [Float](repeating: 1, count: 10_000), shape: [100, 100])
            try f.setAttribute("format", "moe-dist/checkpoint")
        }
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        try data.prefix(data.count / 2).write(to: URL(fileURLWithPath: path))
        do {
            let f = try H5File.open(path: path)
            // If HDF5 accepts the superblock, reading what was cut off must still fail.
            _ = try f.read("params/embed", as: Float.self)
            XCTFail("a truncated file was read without error")
        } catch {
            XCTAssertTrue("\(error)".contains(path), "\(error)")
            XCTAssertTrue("\(error)".lowercased().contains("truncated"), "\(error)")
        }
    }

    func testAtomicWriterPublishesOnlyCompleteFiles() throws {
        let dir = try temporaryDirectory(self)
        let path = dir + "/ckpt-000100.h5"
        struct Boom: Error {}
        XCTAssertThrowsError(try AtomicFile.write(to: path) { f in
            try f.createDataset("params/embed", values: [Float(1), 2], shape: [2])
            throw Boom()
        }) { XCTAssertTrue($0 is Boom) }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [], "nothing may be left behind")

        // An HDF5 failure inside the body also leaves nothing.
        XCTAssertThrowsError(try AtomicFile.write(to: path) { f in
            _ = try f.openDataset("nope")
        })
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [])

        // Success: only the final name exists, complete.
        let n = try AtomicFile.write(to: path) { f -> Int in
            try f.setAttribute("step", Int64(100))
            try f.createDataset("params/embed", values: [Float(1), 2], shape: [2])
            return 7
        }
        XCTAssertEqual(n, 7)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["ckpt-000100.h5"])
        XCTAssertEqual(try H5File.open(path: path).int64Attribute("step"), 100)

        // A failed rewrite leaves the previous complete file untouched.
        XCTAssertThrowsError(try AtomicFile.write(to: path) { f in
            try f.setAttribute("step", Int64(200)); throw Boom()
        })
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["ckpt-000100.h5"])
        XCTAssertEqual(try H5File.open(path: path).int64Attribute("step"), 100)
        XCTAssertTrue(AtomicFile.temporaryPath(for: path).hasPrefix(dir + "/.ckpt-000100.h5.tmp-"))
    }

    /// h5py can open a file that a writer created with `fileLocking: false` and keeps open,
    /// and sees what was flushed; with locking on (HDF5's default) h5py is refused.
    func testReaderSeesFlushedDataWhileWriterHoldsFile() throws {
        let dir = try temporaryDirectory(self)
        let script = """
        import h5py, sys
        try:
            f = h5py.File(sys.argv[1], 'r'); print(list(f['x'][:])); f.close()
        except OSError as e:
            print('refused' if 'lock' in str(e) else 'error: %s' % e)
        """
        let open = try H5File.create(path: dir + "/open.h5", fileLocking: false)
        let ds = try open.createDataset("x", of: Double.self, shape: [0], extendable: true)
        try ds.appendRows([1, 2])
        try open.flush()
        XCTAssertEqual(try Python.run(script, [dir + "/open.h5"]), "[np.float64(1.0), np.float64(2.0)]\n")
        try ds.appendRows([3])
        try open.flush()
        XCTAssertEqual(try Python.run(script, [dir + "/open.h5"]),
                       "[np.float64(1.0), np.float64(2.0), np.float64(3.0)]\n")

        let locked = try H5File.create(path: dir + "/locked.h5")
        try locked.createDataset("x", values: [Double(1)], shape: [1])
        try locked.flush()
        XCTAssertEqual(try Python.run(script, [dir + "/locked.h5"]), "refused\n")
        locked.close()
        XCTAssertEqual(try Python.run(script, [dir + "/locked.h5"]), "[np.float64(1.0)]\n")
    }
}

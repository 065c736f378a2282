// Round trips through the HDF5 wrapper: every element type and rank, slabs,
// resizing, attributes, groups; h5py as an independent reader.
import Foundation
import XCTest
import TestSupport
@testable import HDF5

final class HDF5RoundTripTests: XCTestCase {
    private func values<T: H5Element & Numeric>(_ n: Int, _ make: (Int) -> T) -> [T] { (0 ..< n).map(make) }

    func testEveryTypeAndRankRoundTrips() throws {
        let path = try temporaryDirectory(self) + "/types.h5"
        let shapes: [[Int]] = [[], [5], [3, 4], [2, 3, 4], [2, 1, 3, 2], [0, 3]]
        do {
            let f = try H5File.create(path: path)
            for (i, shape) in shapes.enumerated() {
                let n = shape.reduce(1, *)
                try f.createDataset("f32/\(i)", values: values(n) { Float($0) * 0.5 - 1 }, shape: shape)
                try f.createDataset("f64/\(i)", values: values(n) { Double($0) / 3 }, shape: shape)
                try f.createDataset("i64/\(i)", values: values(n) { Int64($0) * 1_000_000_007 - 5 }, shape: shape)
                try f.createDataset("i32/\(i)", values: values(n) { Int32($0) - 7 }, shape: shape)
            }
            f.close()
        }
        let f = try H5File.open(path: path)
        XCTAssertEqual(try f.memberNames(), ["f32", "f64", "i32", "i64"])
        for (i, shape) in shapes.enumerated() {
            let n = shape.reduce(1, *)
            XCTAssertEqual(try f.openDataset("f32/\(i)").shape(), shape)
            XCTAssertEqual(try f.read("f32/\(i)", as: Float.self), values(n) { Float($0) * 0.5 - 1 })
            XCTAssertEqual(try f.read("f64/\(i)", as: Double.self), values(n) { Double($0) / 3 })
            XCTAssertEqual(try f.read("i64/\(i)", as: Int64.self), values(n) { Int64($0) * 1_000_000_007 - 5 })
            XCTAssertEqual(try f.read("i32/\(i)", as: Int32.self), values(n) { Int32($0) - 7 })
            XCTAssertEqual(try f.openDataset("f32/\(i)").elementType(), .float32)
            XCTAssertEqual(try f.openDataset("i64/\(i)").elementType(), .int64)
        }
        // h5py sees the same shapes, dtypes and values.
        let out = try Python.run("""
        import h5py, sys, numpy as np
        f = h5py.File(sys.argv[1], 'r')
        for i in range(6):
            a = f['f32/%d' % i]; b = f['f64/%d' % i]; c = f['i64/%d' % i]; d = f['i32/%d' % i]
            assert a.dtype == np.float32 and b.dtype == np.float64 and c.dtype == np.int64 and d.dtype == np.int32
            n = int(np.prod(a.shape))
            assert np.array_equal(np.asarray(a[()]).ravel(), np.arange(n, dtype=np.float32) * 0.5 - 1)
            assert np.array_equal(np.asarray(c[()]).ravel(), np.arange(n, dtype=np.int64) * 1000000007 - 5)
            print(a.shape)
        """, [path])
        XCTAssertEqual(out.split(separator: "\n").map(String.init),
                       ["()", "(5,)", "(3, 4)", "(2, 3, 4)", "(2, 1, 3, 2)", "(0, 3)"])
    }

    func testFloat32ReadsAsDoubleByConversion() throws {
        let path = try temporaryDirectory(self) + "/conv.h5"
        let f = try H5File.create(path: path)
        try f.createDataset("x", values: [Float(1.5), -2.25], shape: [2])
        XCTAssertEqual(try f.read("x", as: Double.self), [1.5, -2.25])
    }

    func testSlabsAlongFirstAxis() throws {
        let path = try temporaryDirectory(self) + "/slab.h5"
        let e = 6, d = 3, f = 4
        let full = values(e * d * f) { Float($0) }
        do {
            let file = try H5File.create(path: path)
            let ds = try file.createDataset("params/ffn/0/w1", of: Float.self, shape: [e, d, f], chunks: [1, d, f])
            // Two "ranks" each write the experts they own.
            try ds.writeRows(Array(full[0 ..< 3 * d * f]), at: 0)
            try ds.writeRows(Array(full[3 * d * f ..< 6 * d * f]), at: 3)
            try file.flush()
        }
        let file = try H5File.open(path: path)
        let ds = try file.openDataset("/params/ffn/0/w1")
        XCTAssertEqual(try ds.read(as: Float.self), full)
        XCTAssertEqual(try ds.readRows(2 ..< 5, as: Float.self), Array(full[2 * d * f ..< 5 * d * f]))
        XCTAssertEqual(try ds.readRows(4 ..< 4, as: Float.self), [])
        XCTAssertThrowsError(try ds.readRows(5 ..< 7, as: Float.self)) { err in
            XCTAssertTrue("\(err)".contains("/params/ffn/0/w1") && "\(err)".contains(path), "\(err)")
        }
        XCTAssertThrowsError(try ds.writeRows([Float(1)], at: 0))   // not a whole row
        XCTAssertEqual(try ds.chunkShape(), [1, d, f])
    }

    func testExtendShrinkAndAppend() throws {
        let path = try temporaryDirectory(self) + "/grow.h5"
        let file = try H5File.create(path: path)
        let ds = try file.createDataset("experts/counts", of: Int64.self, shape: [0, 2, 3], chunks: [4, 2, 3], extendable: true)
        XCTAssertEqual(try ds.maxShape(), [nil, 2, 3])
        for r in 0 ..< 5 { try ds.appendRows(values(6) { Int64(r * 10 + $0) }) }
        XCTAssertEqual(try ds.shape(), [5, 2, 3])
        try ds.resize(rows: 2)
        XCTAssertEqual(try ds.shape(), [2, 2, 3])
        try ds.appendRows(values(12) { Int64(100 + $0) })
        XCTAssertEqual(try ds.read(as: Int64.self),
                       values(6) { Int64($0) } + values(6) { Int64(10 + $0) } + values(12) { Int64(100 + $0) })
        let fixed = try file.createDataset("fixed", of: Double.self, shape: [3])
        XCTAssertThrowsError(try fixed.resize(rows: 4)) { XCTAssertTrue("\($0)".contains("/fixed"), "\($0)") }
        // A default chunk shape is chosen for an extendable dataset.
        let auto = try file.createDataset("auto", of: Double.self, shape: [0], extendable: true)
        XCTAssertEqual(try auto.chunkShape(), [8192])
        try auto.appendRows([1, 2, 3])
        XCTAssertEqual(try auto.read(as: Double.self), [1, 2, 3])
    }

    func testGroupsNestedExistsAndMembers() throws {
        let path = try temporaryDirectory(self) + "/groups.h5"
        let f = try H5File.create(path: path)
        let g = try f.createGroup("/params/blocks/0")
        XCTAssertEqual(g.objectPath, "/params/blocks/0")
        try g.createDataset("wq", values: [Float(1), 2, 3, 4], shape: [2, 2])
        try f.createGroup("params/blocks/1")
        XCTAssertTrue(try f.exists("/params/blocks/0/wq"))
        XCTAssertTrue(try f.exists("params/blocks"))
        XCTAssertFalse(try f.exists("/params/nothing/here"))
        XCTAssertTrue(try f.isDataset("/params/blocks/0/wq"))
        XCTAssertFalse(try f.isDataset("/params/blocks"))
        XCTAssertEqual(try f.openGroup("params/blocks").memberNames(), ["0", "1"])
        XCTAssertEqual(try f.openGroup("/params").openGroup("blocks/0").read("wq", as: Float.self), [1, 2, 3, 4])
        XCTAssertThrowsError(try f.createGroup("/params/blocks/0")) { XCTAssertTrue("\($0)".contains("/params/blocks/0")) }
        XCTAssertThrowsError(try f.openGroup("/missing")) { err in
            XCTAssertTrue("\(err)".contains("/missing") && "\(err)".contains(path) && "\(err)".contains("open group"), "\(err)")
        }
        XCTAssertThrowsError(try f.openDataset("/params/blocks/0/wk"))
        XCTAssertNotNil(try f.openOrCreateGroup("/state"))
        XCTAssertNotNil(try f.openOrCreateGroup("/state"))
    }

    func testAttributesOnRootGroupsAndDatasets() throws {
        let path = try temporaryDirectory(self) + "/attrs.h5"
        do {
            let f = try H5File.create(path: path)
            try f.setAttribute("format", "moe-dist/checkpoint")
            try f.setAttribute("fixed", "ascii ünïcode", fixedLength: true)
            try f.setAttribute("version", Int64(1))
            try f.setAttribute("step", Int64(41))
            try f.setAttribute("step", Int64(42))   // overwrite
            try f.setAttribute("lr", 3e-4)
            try f.setAttribute("shape", [Int64(2), 3])
            try f.setAttribute("losses", [1.5, 2.5, -0.25])
            try f.setAttribute("empty", "")
            let g = try f.createGroup("state")
            try g.setAttribute("rng", [Int64.max, Int64.min])
            let ds = try f.createDataset("state/x", values: [Double(1)], shape: [1])
            try ds.setAttribute("note", "on a dataset")
            try ds.setAttribute("scale", 0.5)
        }
        let f = try H5File.open(path: path)
        XCTAssertEqual(try f.stringAttribute("format"), "moe-dist/checkpoint")
        XCTAssertEqual(try f.stringAttribute("fixed"), "ascii ünïcode")
        XCTAssertEqual(try f.int64Attribute("version"), 1)
        XCTAssertEqual(try f.int64Attribute("step"), 42)
        XCTAssertEqual(try f.doubleAttribute("lr"), 3e-4)
        XCTAssertEqual(try f.int64ArrayAttribute("shape"), [2, 3])
        XCTAssertEqual(try f.doubleArrayAttribute("losses"), [1.5, 2.5, -0.25])
        XCTAssertEqual(try f.stringAttribute("empty"), "")
        XCTAssertEqual(try f.openGroup("state").int64ArrayAttribute("rng"), [Int64.max, Int64.min])
        XCTAssertEqual(try f.openDataset("state/x").stringAttribute("note"), "on a dataset")
        XCTAssertEqual(try f.openDataset("state/x").doubleAttribute("scale"), 0.5)
        XCTAssertTrue(try f.hasAttribute("lr"))
        XCTAssertFalse(try f.hasAttribute("nope"))
        XCTAssertEqual(Set(try f.attributeNames()), ["format", "fixed", "version", "step", "lr", "shape", "losses", "empty"])
        XCTAssertThrowsError(try f.stringAttribute("nope")) { XCTAssertTrue("\($0)".contains("@nope") && "\($0)".contains(path)) }
        XCTAssertThrowsError(try f.stringAttribute("version")) // not a string
        XCTAssertThrowsError(try f.int64Attribute("shape"))    // not a scalar
        f.close()

        let out = try Python.run("""
        import h5py, sys
        f = h5py.File(sys.argv[1], 'r')
        a = f.attrs
        assert isinstance(a['format'], str) and a['format'] == 'moe-dist/checkpoint', repr(a['format'])
        assert a['version'] == 1 and a['version'].dtype.name == 'int64'
        assert a['step'] == 42 and a['lr'] == 3e-4 and list(a['shape']) == [2, 3]
        assert list(a['losses']) == [1.5, 2.5, -0.25]
        fixed = a['fixed']
        fixed = fixed.decode() if isinstance(fixed, bytes) else str(fixed)
        assert fixed == 'ascii ünïcode', repr(fixed)
        assert f['state/x'].attrs['note'] == 'on a dataset'
        print('ok')
        """, [path])
        XCTAssertEqual(out, "ok\n")
    }

    /// `setCheckedAttribute` stores zlib's CRC-32 of the UTF-8 bytes (Python computes the same), and
    /// `checkedStringAttribute` refuses a value changed in the file, which `stringAttribute` reads.
    func testCheckedStringAttributeRefusesAChangedValue() throws {
        let path = try temporaryDirectory(self) + "/checked.h5"
        let value = #"{"note": "ünïcode", "seed": 1234}"#
        do {
            let f = try H5File.create(path: path)
            try f.setCheckedAttribute("config", value)
            try f.setAttribute("plain", "no checksum")
        }
        XCTAssertEqual(try H5File.open(path: path).checkedStringAttribute("config"), value)
        XCTAssertEqual(try H5File.open(path: path).checkedStringAttribute("plain"), "no checksum")  // written before checksums
        let py = try Python.run("""
        import h5py, sys, zlib
        a = h5py.File(sys.argv[1], 'r').attrs
        print(zlib.crc32(a['config'].encode()) == a['config_crc32'], a['config_crc32'].dtype.name)
        """, [path])
        XCTAssertEqual(py, "True int64\n")

        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        let pattern = Array("1234".utf8)
        let at = (0...(bytes.count - 4)).filter { Array(bytes[$0..<$0 + 4]) == pattern }
        XCTAssertEqual(at.count, 1)
        bytes[at[0] + 3] = UInt8(ascii: "5")
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let f = try H5File.open(path: path, readOnly: false)
        XCTAssertEqual(try f.stringAttribute("config"), value.replacingOccurrences(of: "1234", with: "1235"), "HDF5 itself reads it")
        XCTAssertThrowsError(try f.checkedStringAttribute("config")) {
            XCTAssertTrue("\($0)".contains(path) && "\($0)".contains("@config") && "\($0)".contains("CRC-32"), "\($0)")
        }
        try f.removeCheckedAttribute("config")
        XCTAssertEqual(Set(try f.attributeNames()), ["plain"])
    }

    func testStringAttributesWrittenByH5pyAreRead() throws {
        let path = try temporaryDirectory(self) + "/py.h5"
        _ = try Python.run("""
        import h5py, sys, numpy as np
        f = h5py.File(sys.argv[1], 'w')
        f.attrs['vlen'] = 'hello'
        f.attrs['fixed'] = np.bytes_(b'abc')
        f.attrs['i'] = 7
        f.attrs['d'] = np.float32(0.5)
        f.close()
        """, [path])
        let f = try H5File.open(path: path)
        XCTAssertEqual(try f.stringAttribute("vlen"), "hello")
        XCTAssertEqual(try f.stringAttribute("fixed"), "abc")
        XCTAssertEqual(try f.int64Attribute("i"), 7)
        XCTAssertEqual(try f.doubleAttribute("d"), 0.5)
    }

    func testFletcher32IsStoredAndVisibleToH5py() throws {
        let path = try temporaryDirectory(self) + "/f32.h5"
        do {
            let f = try H5File.create(path: path)
            let ds = try f.createDataset("params/embed", values: values(40) { Float($0) }, shape: [10, 4], fletcher32: true)
            XCTAssertTrue(try ds.hasFletcher32())
            XCTAssertNotNil(try ds.chunkShape())   // chunking chosen automatically
            XCTAssertFalse(try f.createDataset("plain", of: Float.self, shape: [2]).hasFletcher32())
        }
        let f = try H5File.open(path: path)
        XCTAssertEqual(try f.read("params/embed", as: Float.self), values(40) { Float($0) })
        let out = try Python.run("""
        import h5py, sys
        f = h5py.File(sys.argv[1], 'r')
        print(f['params/embed'].fletcher32, f['plain'].fletcher32, f['params/embed'].chunks is not None)
        """, [path])
        XCTAssertEqual(out, "True False True\n")
    }

    /// The chunk index has no checksum. Fuzz seed checkpoint 252 changed one byte of a chunk's coordinates
    /// ([3, 0, 0] -> [3, 65280, 0]): HDF5 then read that expert's weights as zeros, with no error. A changed
    /// filter mask would skip the chunk's Fletcher-32. `verifyChunkIndex` refuses both.
    func testADamagedChunkIndexIsRefused() throws {
        let path = try temporaryDirectory(self) + "/index.h5"
        let weights = values(8 * 4 * 4) { Float($0 + 1) }
        do {
            let f = try H5File.create(path: path, metadataChecksums: true)
            try f.createDataset("w1", values: weights, shape: [8, 4, 4], chunks: [1, 4, 4], fletcher32: true)
        }
        XCTAssertNoThrow(try H5File.open(path: path).openDataset("w1").verifyChunkIndex())
        let intact = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        // The B-tree key of chunk [3, 0, 0]: its size (16 floats + the checksum), filter mask 0, offsets 3, 0, 0, 0.
        func le32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
        func le64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.littleEndian, Array.init) }
        let key = le32(68) + le32(0) + le64(3) + le64(0) + le64(0) + le64(0)
        let at = (0...(intact.count - key.count)).filter { Array(intact[$0..<$0 + key.count]) == key }
        XCTAssertEqual(at.count, 1, "one B-tree key for chunk [3, 0, 0]")
        for (offset, byte, why) in [(17, 0xFF as UInt8, "no chunk at [3, 0, 0]"), (4, 0x01, "skip its filters")] {
            var bytes = intact
            bytes[at[0] + offset] = byte
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            let ds = try H5File.open(path: path).openDataset("w1")
            if offset == 17 {    // what HDF5 alone reads: expert 3 as zeros
                let read: [Float] = try ds.read()
                XCTAssertEqual(Array(read[48 ..< 64]), [Float](repeating: 0, count: 16))
            }
            XCTAssertThrowsError(try ds.verifyChunkIndex()) {
                XCTAssertTrue("\($0)".contains(path) && "\($0)".contains("chunk index is damaged") && "\($0)".contains(why), "\($0)")
            }
        }
    }

    func testClosedFileMakesObjectsThrow() throws {
        let path = try temporaryDirectory(self) + "/closed.h5"
        let f = try H5File.create(path: path)
        let ds = try f.createDataset("x", values: [Double(1)], shape: [1])
        f.close()
        f.close()   // idempotent
        XCTAssertThrowsError(try ds.read(as: Double.self)) { XCTAssertTrue("\($0)".contains("closed"), "\($0)") }
        XCTAssertEqual(try H5File.open(path: path).read("x", as: Double.self), [1])
    }
}

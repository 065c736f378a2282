// H5Dataset: an n-dimensional array of numbers in an HDF5 file; whole and
// first-axis slab reads and writes, and resizing of an extendable first axis.
import CHDF5

/// A dataset. Values are row-major (C order) flat arrays. Reading converts from
/// the stored element type to the requested one as HDF5 does (float32 -> Double, ...).
public final class H5Dataset: H5Object {
    deinit { if file.isOpen { H5Dclose(id) } }

    /// Current shape (`[]` for a scalar).
    public func shape() throws -> [Int] {
        try requireOpen("read shape of")
        let space = try check(H5Dget_space(id), "read shape of")
        defer { H5Sclose(space) }
        return try extent(space).dims
    }

    /// Largest shape the dataset may grow to; `nil` on an unlimited axis.
    public func maxShape() throws -> [Int?] {
        try requireOpen("read shape of")
        let space = try check(H5Dget_space(id), "read shape of")
        defer { H5Sclose(space) }
        return try extent(space).max
    }

    /// The stored element type (nil for types the wrapper does not write, such as uint8).
    public func elementType() throws -> H5ElementType? {
        try requireOpen("read type of")
        let type = try check(H5Dget_type(id), "read type of")
        defer { H5Tclose(type) }
        let size = H5Tget_size(type)
        switch H5Tget_class(type) {
        case H5T_FLOAT: return size == 4 ? .float32 : size == 8 ? .float64 : nil
        case H5T_INTEGER where H5Tget_sign(type) == H5T_SGN_2: return size == 8 ? .int64 : size == 4 ? .int32 : nil
        default: return nil
        }
    }

    /// Chunk shape, or nil for contiguous storage.
    public func chunkShape() throws -> [Int]? {
        try requireOpen("read layout of")
        let dcpl = try check(H5Dget_create_plist(id), "read layout of")
        defer { H5Pclose(dcpl) }
        guard H5Pget_layout(dcpl) == H5D_CHUNKED else { return nil }
        var dims = [hsize_t](repeating: 0, count: 32)
        let rank = H5Pget_chunk(dcpl, 32, &dims)
        if rank < 0 { throw fail("read layout of") }
        return dims.prefix(Int(rank)).map { Int($0) }
    }

    /// Whether chunks carry a Fletcher-32 checksum.
    public func hasFletcher32() throws -> Bool {
        try requireOpen("read filters of")
        let dcpl = try check(H5Dget_create_plist(id), "read filters of")
        defer { H5Pclose(dcpl) }
        let n = H5Pget_nfilters(dcpl)
        if n < 0 { throw fail("read filters of") }
        for i in 0 ..< UInt32(n) {
            var flags: UInt32 = 0, nValues = 0, config: UInt32 = 0
            var name = [CChar](repeating: 0, count: 64)
            if H5Pget_filter2(dcpl, i, &flags, &nValues, nil, name.count, &name, &config) == moe_h5_z_filter_fletcher32() {
                return true
            }
        }
        return false
    }

    /// Checks the chunk index against the shape: a chunk at every grid position, with all its
    /// filters applied, and (without `rows`) no other chunk. The index of a chunked dataset (a
    /// version-1 B-tree in the formats moe-dist writes) has no checksum: a changed byte can move
    /// a chunk's coordinates out of the grid, and HDF5 then reads the chunk it no longer finds as
    /// fill values (zeros), or set a filter-mask bit, and HDF5 then skips the chunk's Fletcher-32.
    /// `rows`: only the chunks of the first `rows` rows are checked (a file being appended to may
    /// have grown by a row whose values are not written yet). Each position is one index lookup.
    public func verifyChunkIndex(rows: Int? = nil) throws {
        guard let chunk = try chunkShape() else { return }
        let dims = try shape()
        let fail = { (why: String) in HDF5Error(file: self.filePath, object: self.objectPath, operation: "read dataset",
                                                detail: "its chunk index is damaged: \(why)") }
        guard chunk.count == dims.count, !dims.isEmpty, chunk.allSatisfy({ $0 > 0 }) else {
            throw fail("chunks \(chunk) for shape \(dims)")
        }
        let needed = [min(rows ?? dims[0], dims[0])] + dims.dropFirst()
        let grid = zip(needed, chunk).map { ($0 + $1 - 1) / $1 }
        let expected = grid.reduce(1, *)
        if rows == nil {
            let space = try check(H5Dget_space(id), "read chunk index of")
            defer { H5Sclose(space) }
            var count: hsize_t = 0
            try check(H5Dget_num_chunks(id, space, &count), "read chunk index of")
            guard Int(count) == expected else { throw fail("\(count) chunks where the shape \(dims) needs \(expected)") }
        }
        var position = [Int](repeating: 0, count: dims.count)
        for _ in 0 ..< expected {
            var offset = zip(position, chunk).map { hsize_t($0 * $1) }
            var mask: UInt32 = 0, address: haddr_t = 0, size: hsize_t = 0
            try check(H5Dget_chunk_info_by_coord(id, &offset, &mask, &address, &size), "read chunk index of")
            guard size > 0 else { throw fail("no chunk at \(offset)") }
            guard mask == 0 else { throw fail("the chunk at \(offset) is marked to skip its filters (mask \(mask))") }
            for axis in position.indices.reversed() {     // the next grid position, last axis fastest
                position[axis] += 1
                if position[axis] < grid[axis] { break }
                position[axis] = 0
            }
        }
    }

    // MARK: Whole reads and writes

    /// Writes the whole dataset; `values.count` must equal the product of the shape.
    public func write<T: H5Element>(_ values: [T]) throws {
        try requireOpen("write dataset")
        let count = try shape().reduce(1, *)
        guard values.count == count else {
            throw HDF5Error(file: filePath, object: objectPath, operation: "write dataset",
                            detail: "\(values.count) values given for \(count) elements (shape \(try shape()))")
        }
        if count == 0 { return }
        try check(values.withUnsafeBytes {
            H5Dwrite(id, T.h5Type.memoryType, moe_h5_s_all(), moe_h5_s_all(), moe_h5_p_default(), $0.baseAddress)
        }, "write dataset")
    }

    /// Reads the whole dataset.
    public func read<T: H5Element>(as type: T.Type = T.self) throws -> [T] {
        try requireOpen("read dataset")
        let count = try shape().reduce(1, *)
        var out = [T](repeating: T(), count: count)
        if count == 0 { return out }
        try check(out.withUnsafeMutableBytes {
            H5Dread(id, T.h5Type.memoryType, moe_h5_s_all(), moe_h5_s_all(), moe_h5_p_default(), $0.baseAddress)
        }, "read dataset")
        return out
    }

    // MARK: First-axis slabs

    /// Writes rows `start ..< start + n` (along the first axis), where `n` is
    /// `values.count` divided by the elements per row. The rows must exist (see `resize`).
    public func writeRows<T: H5Element>(_ values: [T], at start: Int) throws {
        try requireOpen("write rows of")
        let dims = try shape()
        let (rowElements, n) = try rowCount(values.count, dims: dims, operation: "write rows of")
        let op = "write rows \(start)..<\(start + n) of"
        if n == 0 { return }
        let (fileSpace, memSpace) = try slab(dims: dims, start: start, rows: n, rowElements: rowElements, operation: op)
        defer { H5Sclose(fileSpace); H5Sclose(memSpace) }
        try check(values.withUnsafeBytes {
            H5Dwrite(id, T.h5Type.memoryType, memSpace, fileSpace, moe_h5_p_default(), $0.baseAddress)
        }, op)
    }

    /// Reads rows `rows` along the first axis (for an expert tensor `[E, ...]`, the
    /// experts a rank owns), row-major.
    public func readRows<T: H5Element>(_ rows: Range<Int>, as type: T.Type = T.self) throws -> [T] {
        try requireOpen("read rows of")
        let dims = try shape()
        let op = "read rows \(rows.lowerBound)..<\(rows.upperBound) of"
        guard !dims.isEmpty else {
            throw HDF5Error(file: filePath, object: objectPath, operation: op, detail: "a scalar has no rows")
        }
        let rowElements = dims.dropFirst().reduce(1, *)
        var out = [T](repeating: T(), count: rows.count * rowElements)
        if out.isEmpty {
            if rows.lowerBound < 0 || rows.upperBound > dims[0] { throw outOfRange(op, dims) }
            return out
        }
        let (fileSpace, memSpace) = try slab(dims: dims, start: rows.lowerBound, rows: rows.count,
                                             rowElements: rowElements, operation: op)
        defer { H5Sclose(fileSpace); H5Sclose(memSpace) }
        try check(out.withUnsafeMutableBytes {
            H5Dread(id, T.h5Type.memoryType, memSpace, fileSpace, moe_h5_p_default(), $0.baseAddress)
        }, op)
        return out
    }

    // MARK: Resizing the first axis

    /// Sets the length of the first axis (grow or shrink; shrinking discards rows).
    /// Only for datasets created `extendable` (or to sizes within their maximum shape).
    public func resize(rows: Int) throws {
        try requireOpen("resize")
        var dims = try shape()
        guard !dims.isEmpty, rows >= 0 else {
            throw HDF5Error(file: filePath, object: objectPath, operation: "resize to \(rows) rows",
                            detail: dims.isEmpty ? "a scalar has no rows" : "negative length")
        }
        dims[0] = rows
        var h = dims.map { hsize_t($0) }
        try check(H5Dset_extent(id, &h), "resize to \(rows) rows")
    }

    /// Appends rows at the end of the first axis (grows it, then writes).
    public func appendRows<T: H5Element>(_ values: [T]) throws {
        let dims = try shape()
        let (_, n) = try rowCount(values.count, dims: dims, operation: "append rows to")
        try resize(rows: dims[0] + n)
        try writeRows(values, at: dims[0])
    }

    // MARK: Helpers

    private func extent(_ space: hid_t) throws -> (dims: [Int], max: [Int?]) {
        let rank = H5Sget_simple_extent_ndims(space)
        if rank < 0 { throw fail("read shape of") }
        var dims = [hsize_t](repeating: 0, count: Int(rank)), maxDims = dims
        if rank > 0 && H5Sget_simple_extent_dims(space, &dims, &maxDims) < 0 { throw fail("read shape of") }
        // A damaged file can claim any extent: refuse one whose element count does not fit an Int.
        var elements = 1
        for d in dims {
            let (product, overflow) = elements.multipliedReportingOverflow(by: Int(exactly: d) ?? -1)
            guard d <= UInt64(Int.max), !overflow else {
                throw HDF5Error(file: filePath, object: objectPath, operation: "read shape of",
                                detail: "extent \(dims) is impossibly large (damaged file)")
            }
            elements = product
        }
        return (dims.map { Int($0) }, maxDims.map { $0 == moe_h5_s_unlimited() ? nil : Int(exactly: $0) })
    }

    private func rowCount(_ count: Int, dims: [Int], operation: String) throws -> (rowElements: Int, rows: Int) {
        guard !dims.isEmpty else {
            throw HDF5Error(file: filePath, object: objectPath, operation: operation, detail: "a scalar has no rows")
        }
        let rowElements = dims.dropFirst().reduce(1, *)
        guard rowElements > 0 ? count % rowElements == 0 : count == 0 else {
            throw HDF5Error(file: filePath, object: objectPath, operation: operation,
                            detail: "\(count) values is not a whole number of rows of \(rowElements) (shape \(dims))")
        }
        return (rowElements, rowElements > 0 ? count / rowElements : 0)
    }

    private func outOfRange(_ operation: String, _ dims: [Int]) -> HDF5Error {
        HDF5Error(file: filePath, object: objectPath, operation: operation,
                  detail: "rows out of range (the dataset has \(dims.first ?? 0) rows, shape \(dims))")
    }

    /// File and memory dataspaces selecting `rows` rows from `start`.
    private func slab(dims: [Int], start: Int, rows: Int, rowElements: Int, operation: String) throws -> (hid_t, hid_t) {
        if start < 0 || start + rows > dims[0] { throw outOfRange(operation, dims) }
        let fileSpace = try check(H5Dget_space(id), operation)
        var offset = [hsize_t](repeating: 0, count: dims.count)
        offset[0] = hsize_t(start)
        var count = dims.map { hsize_t($0) }
        count[0] = hsize_t(rows)
        if H5Sselect_hyperslab(fileSpace, H5S_SELECT_SET, &offset, nil, &count, nil) < 0 {
            H5Sclose(fileSpace)
            throw fail(operation)
        }
        let memSpace = H5Screate_simple(Int32(count.count), &count, nil)
        if memSpace < 0 {
            H5Sclose(fileSpace)
            throw fail(operation)
        }
        return (fileSpace, memSpace)
    }
}

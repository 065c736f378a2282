// H5Group: a group (a directory of groups and datasets) in an HDF5 file.
import CHDF5

/// A group. Paths passed to its methods are relative to it ("blocks/0/wq") or
/// absolute from the file's root ("/params/embed").
public class H5Group: H5Object {
    deinit { if file.isOpen && !(self is H5File) { H5Gclose(id) } }

    // MARK: Groups

    /// Creates the group at `path`, creating missing intermediate groups
    /// ("/params/blocks/0" creates "/params" and "/params/blocks" if needed).
    /// Throws if an object already exists at `path`.
    @discardableResult
    public func createGroup(_ path: String) throws -> H5Group {
        try requireOpen("create group")
        let full = childPath(path)
        let lcpl = try intermediateLinkList(full, "create group")
        defer { H5Pclose(lcpl) }
        let gid = try check(H5Gcreate2(id, path, lcpl, moe_h5_p_default(), moe_h5_p_default()), "create group", full)
        return H5Group(id: gid, objectPath: normalized(full), owner: file)
    }

    /// Opens an existing group.
    public func openGroup(_ path: String) throws -> H5Group {
        try requireOpen("open group")
        let full = childPath(path)
        guard try exists(path) else {
            throw HDF5Error(file: filePath, object: full, operation: "open group", detail: "no such group")
        }
        let gid = try check(H5Gopen2(id, path, moe_h5_p_default()), "open group", full)
        return H5Group(id: gid, objectPath: normalized(full), owner: file)
    }

    /// Opens the group at `path`, creating it (and its parents) if missing.
    public func openOrCreateGroup(_ path: String) throws -> H5Group {
        try exists(path) ? try openGroup(path) : try createGroup(path)
    }

    /// Whether an object (group or dataset) exists at `path`; every intermediate
    /// component is checked, so a missing parent gives `false`, not an error.
    public func exists(_ path: String) throws -> Bool {
        try requireOpen("look up")
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        if parts.isEmpty { return true }
        var prefix = path.hasPrefix("/") ? "" : "."
        for part in parts {
            prefix += "/" + part
            let tri = H5Lexists(id, prefix, moe_h5_p_default())
            if tri < 0 { throw fail("look up", childPath(path)) }
            if tri == 0 { return false }
        }
        return true
    }

    /// Whether `path` names a dataset (false if missing or a group).
    public func isDataset(_ path: String) throws -> Bool {
        guard try exists(path) else { return false }
        let oid = try check(H5Oopen(id, path, moe_h5_p_default()), "open object", childPath(path))
        defer { H5Oclose(oid) }
        return H5Iget_type(oid) == H5I_DATASET
    }

    /// Names of the group's direct members (groups and datasets), sorted by name.
    public func memberNames() throws -> [String] {
        try requireOpen("list members")
        var info = H5G_info_t()
        try check(H5Gget_info(id, &info), "list members")
        var names: [String] = []
        for i in 0 ..< info.nlinks {
            let len = H5Lget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, i, nil, 0, moe_h5_p_default())
            if len < 0 { throw fail("list members") }
            var buf = [CChar](repeating: 0, count: Int(len) + 1)
            _ = H5Lget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, i, &buf, buf.count, moe_h5_p_default())
            names.append(String(cString: buf))
        }
        return names
    }

    /// Removes the link at `path` (the space is not reclaimed inside the file).
    public func remove(_ path: String) throws {
        try requireOpen("remove")
        try check(H5Ldelete(id, path, moe_h5_p_default()), "remove", childPath(path))
    }

    // MARK: Datasets

    /// Creates a dataset of `type` elements and shape `shape` (any rank; `[]` is a scalar),
    /// creating missing intermediate groups.
    /// - chunks: chunk shape (same rank); required by `extendable` and `fletcher32`, so when
    ///   nil and one of them is set, a default is chosen: whole trailing axes and as many
    ///   first-axis rows as fit in about 1 MiB (64 KiB when extendable).
    /// - extendable: the first axis may grow without limit (H5S_UNLIMITED); see `H5Dataset.resize`.
    /// - fletcher32: store a Fletcher-32 checksum per chunk; reads of a corrupted chunk throw.
    @discardableResult
    public func createDataset<T: H5Element>(_ path: String, of type: T.Type, shape: [Int], chunks: [Int]? = nil,
                                            extendable: Bool = false, fletcher32: Bool = false) throws -> H5Dataset {
        try requireOpen("create dataset")
        let full = childPath(path)
        func bad(_ reason: String) -> HDF5Error {
            HDF5Error(file: filePath, object: full, operation: "create dataset", detail: reason)
        }
        if shape.contains(where: { $0 < 0 }) { throw bad("negative extent in shape \(shape)") }
        if shape.isEmpty && (extendable || fletcher32 || chunks != nil) {
            throw bad("a scalar dataset cannot be chunked, extendable or checksummed")
        }
        var dims = shape.map { hsize_t($0) }
        var maxDims = dims
        if extendable { maxDims[0] = moe_h5_s_unlimited() }
        let space = shape.isEmpty
            ? try check(H5Screate(H5S_SCALAR), "create dataset", full)
            : try check(H5Screate_simple(Int32(shape.count), &dims, &maxDims), "create dataset", full)
        defer { H5Sclose(space) }
        let dcpl = try check(H5Pcreate(moe_h5_p_dataset_create()), "create dataset", full)
        defer { H5Pclose(dcpl) }
        if chunks != nil || extendable || fletcher32 {
            let chunkShape = chunks ?? H5Group.defaultChunks(shape: shape, elementSize: T.h5Type.byteSize, extendable: extendable)
            if chunkShape.count != shape.count || chunkShape.contains(where: { $0 < 1 }) {
                throw bad("chunk shape \(chunkShape) does not fit shape \(shape)")
            }
            for (axis, c) in chunkShape.enumerated() where !(extendable && axis == 0) && c > shape[axis] {
                throw bad("chunk shape \(chunkShape) exceeds fixed shape \(shape) on axis \(axis)")
            }
            var c = chunkShape.map { hsize_t($0) }
            try check(H5Pset_chunk(dcpl, Int32(c.count), &c), "set chunking of", full)
            if fletcher32 { try check(H5Pset_fletcher32(dcpl), "set Fletcher-32 filter of", full) }
        }
        let lcpl = try intermediateLinkList(full, "create dataset")
        defer { H5Pclose(lcpl) }
        let did = try check(H5Dcreate2(id, path, T.h5Type.fileType, space, lcpl, dcpl, moe_h5_p_default()),
                            "create dataset", full)
        return H5Dataset(id: did, objectPath: normalized(full), owner: file)
    }

    /// Creates a dataset and writes `values` (row-major, count = product of `shape`).
    @discardableResult
    public func createDataset<T: H5Element>(_ path: String, values: [T], shape: [Int], chunks: [Int]? = nil,
                                            extendable: Bool = false, fletcher32: Bool = false) throws -> H5Dataset {
        let ds = try createDataset(path, of: T.self, shape: shape, chunks: chunks,
                                   extendable: extendable, fletcher32: fletcher32)
        try ds.write(values)
        return ds
    }

    /// Opens an existing dataset.
    public func openDataset(_ path: String) throws -> H5Dataset {
        try requireOpen("open dataset")
        let full = childPath(path)
        guard try exists(path) else {
            throw HDF5Error(file: filePath, object: full, operation: "open dataset", detail: "no such dataset")
        }
        let did = try check(H5Dopen2(id, path, moe_h5_p_default()), "open dataset", full)
        return H5Dataset(id: did, objectPath: normalized(full), owner: file)
    }

    /// Reads a whole dataset (shorthand for `openDataset(path).read()`).
    public func read<T: H5Element>(_ path: String, as type: T.Type = T.self) throws -> [T] {
        try openDataset(path).read(as: type)
    }

    // MARK: Helpers

    /// A link-creation property list that creates missing intermediate groups.
    private func intermediateLinkList(_ full: String, _ operation: String) throws -> hid_t {
        let lcpl = try check(H5Pcreate(moe_h5_p_link_create()), operation, full)
        if H5Pset_create_intermediate_group(lcpl, 1) < 0 {
            H5Pclose(lcpl)
            throw fail(operation, full)
        }
        return lcpl
    }

    private func normalized(_ path: String) -> String {
        "/" + path.split(separator: "/", omittingEmptySubsequences: true).joined(separator: "/")
    }

    /// Whole trailing axes, and as many first-axis rows as fit in about 1 MiB (at least one);
    /// an extendable dataset gets 64 KiB chunks, however short it starts.
    static func defaultChunks(shape: [Int], elementSize: Int, extendable: Bool) -> [Int] {
        let rowBytes = max(1, shape.dropFirst().reduce(1) { $0 * max(1, $1) } * elementSize)
        var chunk = shape.map { max(1, $0) }
        chunk[0] = extendable ? max(1, (1 << 16) / rowBytes) : max(1, min((1 << 20) / rowBytes, chunk[0]))
        return chunk
    }
}

// H5Object: an open HDF5 object (the file's root group, a group or a dataset)
// and the attributes attached to it.
import CHDF5

/// Base of every open object. Not thread-safe: the HDF5 library installed here is
/// the serial build, so use one object graph from one thread at a time.
public class H5Object {
    /// HDF5 identifier; closed in `deinit` (or by `H5File.close()`, which closes everything in the file).
    let id: hid_t
    /// Absolute path of the object inside its file ("/" for the root).
    public let objectPath: String
    /// The file this object lives in; nil only for an `H5File` itself (which is its own file).
    private let owner: H5File?

    init(id: hid_t, objectPath: String, owner: H5File?) {
        self.id = id; self.objectPath = objectPath; self.owner = owner
    }

    /// The file that holds this object.
    public var file: H5File { owner ?? (self as! H5File) }
    /// Path of the file on disk (for messages).
    public var filePath: String { file.path }

    func fail(_ operation: String, _ object: String? = nil, reason: String? = nil) -> HDF5Error {
        h5Failure(filePath, object ?? objectPath, operation, reason)
    }
    func check(_ id: hid_t, _ operation: @autoclosure () -> String, _ object: String? = nil) throws -> hid_t {
        try h5Check(id, filePath, object ?? objectPath, operation())
    }
    func check(_ status: herr_t, _ operation: @autoclosure () -> String, _ object: String? = nil) throws {
        try h5Check(status, filePath, object ?? objectPath, operation())
    }
    func requireOpen(_ operation: String) throws {
        if !file.isOpen {
            throw HDF5Error(file: filePath, object: objectPath, operation: operation, detail: "the file is closed")
        }
    }
    /// Child path `self/name` for messages.
    func childPath(_ name: String) -> String {
        if name.hasPrefix("/") { return name }
        return objectPath == "/" ? "/" + name : objectPath + "/" + name
    }
    private func attrLabel(_ name: String) -> String { "\(objectPath) @\(name)" }

    // MARK: Attributes

    /// Whether an attribute of that name exists on this object.
    public func hasAttribute(_ name: String) throws -> Bool {
        try requireOpen("check attribute")
        return try h5Check(tri: H5Aexists(id, name), filePath, attrLabel(name), "check attribute")
    }

    /// Names of this object's attributes, in creation/name order as HDF5 lists them.
    public func attributeNames() throws -> [String] {
        try requireOpen("list attributes")
        // H5Aget_num_attrs wants an object, not a file id: open "." (the root group for a file).
        let oid = try check(H5Oopen(id, ".", moe_h5_p_default()), "list attributes")
        defer { H5Oclose(oid) }
        let n = H5Aget_num_attrs(oid)
        if n < 0 { throw fail("list attributes") }
        var names: [String] = []
        for i in 0 ..< Int(n) {
            let len = H5Aget_name_by_idx(oid, ".", H5_INDEX_NAME, H5_ITER_INC, hsize_t(i), nil, 0, moe_h5_p_default())
            if len < 0 { throw fail("list attributes") }
            var buf = [CChar](repeating: 0, count: Int(len) + 1)
            _ = H5Aget_name_by_idx(oid, ".", H5_INDEX_NAME, H5_ITER_INC, hsize_t(i), &buf, buf.count, moe_h5_p_default())
            names.append(String(cString: buf))
        }
        return names
    }

    /// Writes a string attribute, replacing any attribute of that name. Variable-length
    /// UTF-8 by default (h5py reads it as `str`); `fixedLength: true` writes a
    /// NUL-padded fixed-length UTF-8 string of the string's byte length instead (h5py
    /// reads that as `numpy.bytes_`; `.decode()` gives the `str`).
    public func setAttribute(_ name: String, _ value: String, fixedLength: Bool = false) throws {
        try requireOpen("write attribute")
        let label = attrLabel(name)
        let type = try check(H5Tcopy(moe_h5_t_c_s1()), "write attribute", label)
        defer { H5Tclose(type) }
        let bytes = Array(value.utf8)
        try check(H5Tset_size(type, fixedLength ? max(1, bytes.count) : moe_h5_t_variable()), "write attribute", label)
        try check(H5Tset_cset(type, H5T_CSET_UTF8), "write attribute", label)
        if fixedLength { try check(H5Tset_strpad(type, H5T_STR_NULLPAD), "write attribute", label) }
        let space = try check(H5Screate(H5S_SCALAR), "write attribute", label)
        defer { H5Sclose(space) }
        let attr = try createAttribute(name, type: type, space: space)
        defer { H5Aclose(attr) }
        let status: herr_t
        if fixedLength {
            var padded = bytes.map { CChar(bitPattern: $0) }
            if padded.isEmpty { padded = [0] }
            status = H5Awrite(attr, type, padded)
        } else {
            status = value.withCString { p -> herr_t in
                var ptr: UnsafePointer<CChar>? = p
                return H5Awrite(attr, type, &ptr)
            }
        }
        try check(status, "write attribute", label)
    }

    public func setAttribute(_ name: String, _ value: Int64) throws { try setNumericAttribute(name, [value], scalar: true) }
    public func setAttribute(_ name: String, _ value: Double) throws { try setNumericAttribute(name, [value], scalar: true) }
    public func setAttribute(_ name: String, _ values: [Int64]) throws { try setNumericAttribute(name, values, scalar: false) }
    public func setAttribute(_ name: String, _ values: [Double]) throws { try setNumericAttribute(name, values, scalar: false) }

    /// Reads a string attribute, variable- or fixed-length (trailing NULs and padding removed).
    public func stringAttribute(_ name: String) throws -> String {
        try requireOpen("read attribute")
        let label = attrLabel(name)
        let attr = try openAttribute(name)
        defer { H5Aclose(attr) }
        let fileType = try check(H5Aget_type(attr), "read attribute", label)
        defer { H5Tclose(fileType) }
        if H5Tget_class(fileType) != H5T_STRING {
            throw HDF5Error(file: filePath, object: label, operation: "read attribute", detail: "it is not a string")
        }
        let space = try check(H5Aget_space(attr), "read attribute", label)
        defer { H5Sclose(space) }
        if H5Sget_simple_extent_npoints(space) != 1 {
            throw HDF5Error(file: filePath, object: label, operation: "read attribute", detail: "it is not a single string")
        }
        let memType = try check(H5Tcopy(moe_h5_t_c_s1()), "read attribute", label)
        defer { H5Tclose(memType) }
        if try h5Check(tri: H5Tis_variable_str(fileType), filePath, label, "read attribute") {
            try check(H5Tset_size(memType, moe_h5_t_variable()), "read attribute", label)
            try check(H5Tset_cset(memType, H5Tget_cset(fileType)), "read attribute", label)
            var ptr: UnsafeMutablePointer<CChar>? = nil
            try check(H5Aread(attr, memType, &ptr), "read attribute", label)
            defer { if let p = ptr { H5free_memory(p) } }
            return ptr.map { String(cString: $0) } ?? ""
        }
        let size = H5Tget_size(fileType)
        try check(H5Tset_size(memType, size), "read attribute", label)
        try check(H5Tset_cset(memType, H5Tget_cset(fileType)), "read attribute", label)
        try check(H5Tset_strpad(memType, H5T_STR_NULLPAD), "read attribute", label)
        var buf = [UInt8](repeating: 0, count: size + 1)
        try check(H5Aread(attr, memType, &buf), "read attribute", label)
        let end = buf.firstIndex(of: 0) ?? size
        var s = String(decoding: buf[..<end], as: UTF8.self)
        while s.hasSuffix(" ") { s.removeLast() }   // space-padded (Fortran-style) strings
        return s
    }

    /// Reads a scalar integer attribute (any integer type is converted to Int64).
    public func int64Attribute(_ name: String) throws -> Int64 { try scalarAttribute(name) }
    /// Reads a scalar floating-point (or integer) attribute as Double.
    public func doubleAttribute(_ name: String) throws -> Double { try scalarAttribute(name) }
    /// Reads an integer array attribute (a scalar reads as one element).
    public func int64ArrayAttribute(_ name: String) throws -> [Int64] { try numericAttribute(name) }
    /// Reads a floating-point array attribute (a scalar reads as one element).
    public func doubleArrayAttribute(_ name: String) throws -> [Double] { try numericAttribute(name) }

    /// Deletes an attribute if it exists.
    public func removeAttribute(_ name: String) throws {
        if try hasAttribute(name) { try check(H5Adelete(id, name), "delete attribute", attrLabel(name)) }
    }

    // MARK: Attribute internals

    private func createAttribute(_ name: String, type: hid_t, space: hid_t) throws -> hid_t {
        try removeAttribute(name)
        return try check(H5Acreate2(id, name, type, space, moe_h5_p_default(), moe_h5_p_default()),
                         "create attribute", attrLabel(name))
    }

    private func openAttribute(_ name: String) throws -> hid_t {
        if !(try hasAttribute(name)) {
            throw HDF5Error(file: filePath, object: attrLabel(name), operation: "read attribute", detail: "no such attribute")
        }
        return try check(H5Aopen(id, name, moe_h5_p_default()), "open attribute", attrLabel(name))
    }

    private func setNumericAttribute<T: H5Element>(_ name: String, _ values: [T], scalar: Bool) throws {
        try requireOpen("write attribute")
        let label = attrLabel(name)
        let space: hid_t
        if scalar {
            space = try check(H5Screate(H5S_SCALAR), "write attribute", label)
        } else {
            var dims = [hsize_t(values.count)]
            space = try check(H5Screate_simple(1, &dims, nil), "write attribute", label)
        }
        defer { H5Sclose(space) }
        let attr = try createAttribute(name, type: T.h5Type.fileType, space: space)
        defer { H5Aclose(attr) }
        if values.isEmpty { return }
        try check(values.withUnsafeBytes { H5Awrite(attr, T.h5Type.memoryType, $0.baseAddress) }, "write attribute", label)
    }

    private func numericAttribute<T: H5Element>(_ name: String) throws -> [T] {
        try requireOpen("read attribute")
        let label = attrLabel(name)
        let attr = try openAttribute(name)
        defer { H5Aclose(attr) }
        let type = try check(H5Aget_type(attr), "read attribute", label)
        defer { H5Tclose(type) }
        let cls = H5Tget_class(type)
        if cls != H5T_INTEGER && cls != H5T_FLOAT {
            throw HDF5Error(file: filePath, object: label, operation: "read attribute", detail: "it is not numeric")
        }
        let space = try check(H5Aget_space(attr), "read attribute", label)
        defer { H5Sclose(space) }
        let n = Int(H5Sget_simple_extent_npoints(space))
        var out = [T](repeating: T(), count: n)
        if n == 0 { return out }
        try check(out.withUnsafeMutableBytes { H5Aread(attr, T.h5Type.memoryType, $0.baseAddress) }, "read attribute", label)
        return out
    }

    private func scalarAttribute<T: H5Element>(_ name: String) throws -> T {
        let values: [T] = try numericAttribute(name)
        guard values.count == 1 else {
            throw HDF5Error(file: filePath, object: attrLabel(name), operation: "read attribute",
                            detail: "expected one value, found \(values.count)")
        }
        return values[0]
    }
}

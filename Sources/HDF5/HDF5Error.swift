// HDF5Error: every failure of the wrapper, with the file, the object, the
// operation and HDF5's own description of what went wrong.
import CHDF5
import Foundation

/// A failed HDF5 operation. `description` reads like
/// `HDF5: cannot open dataset '/train/loss' in /runs/a/metrics.h5: <HDF5 error stack>`.
public struct HDF5Error: Error, CustomStringConvertible, Equatable {
    /// The HDF5 file the operation concerned (may be empty for library-wide operations).
    public var file: String
    /// The object inside the file (`/params/embed`, an attribute `/ @step`, ...), or "" for the file itself.
    public var object: String
    /// What was being done: "open file", "create dataset", "write rows 3..<5", ...
    public var operation: String
    /// The wrapper's own reason and/or HDF5's error-stack descriptions (most specific first).
    public var detail: String

    public init(file: String, object: String, operation: String, detail: String) {
        self.file = file; self.object = object; self.operation = operation; self.detail = detail
    }

    /// The errno HDF5 reports in its stack ("errno = 28"), if any.
    public var systemErrno: Int32? {
        guard let r = detail.range(of: "errno = ") else { return nil }
        return Int32(detail[r.upperBound...].prefix { $0.isNumber })
    }

    public var description: String {
        var s = "HDF5: cannot \(operation)"
        if !object.isEmpty { s += " '\(object)'" }
        if !file.isEmpty { s += " in \(file)" }
        if let code = systemErrno {
            // The operating system's cause says it best ("no space left on device"); HDF5's stack repeats it.
            let cause = String(cString: strerror(code))
            return s + ": " + cause.prefix(1).lowercased() + cause.dropFirst()
        }
        if !detail.isEmpty { s += ": \(detail)" }
        // One line: HDF5's own messages can hold newlines ("file write failed: time = …\n, filename = …").
        return s.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
    }
}

// MARK: Library set-up and return-code checks

/// Opens the library once and silences its automatic error printing.
private let libraryReady: Bool = moe_h5_init_quiet() == 0

enum H5Library {
    /// Call before the first HDF5 call of any public entry point.
    static func ensureReady() { _ = libraryReady }

    /// The current HDF5 error stack as text (and clears it).
    @discardableResult
    static func takeErrorStack() -> String {
        var buf = [CChar](repeating: 0, count: 1024)
        buf.withUnsafeMutableBufferPointer { moe_h5_error_stack_description($0.baseAddress, $0.count) }
        return String(cString: buf)
    }
}

/// Builds an error from the current HDF5 error stack.
func h5Failure(_ file: String, _ object: String, _ operation: String, _ reason: String? = nil) -> HDF5Error {
    let stack = H5Library.takeErrorStack()
    let detail = [reason, stack.isEmpty ? nil : stack].compactMap { $0 }.joined(separator: ": ")
    return HDF5Error(file: file, object: object, operation: operation, detail: detail)
}

/// Throws unless an identifier-returning call succeeded (HDF5 returns a negative id on failure).
@discardableResult
func h5Check(_ id: hid_t, _ file: String, _ object: String, _ operation: @autoclosure () -> String) throws -> hid_t {
    if id < 0 { throw h5Failure(file, object, operation()) }
    return id
}

/// Throws unless a status-returning call succeeded.
func h5Check(_ status: herr_t, _ file: String, _ object: String, _ operation: @autoclosure () -> String) throws {
    if status < 0 { throw h5Failure(file, object, operation()) }
}

/// Throws unless a tri-state call succeeded; returns its truth value.
func h5Check(tri: htri_t, _ file: String, _ object: String, _ operation: @autoclosure () -> String) throws -> Bool {
    if tri < 0 { throw h5Failure(file, object, operation()) }
    return tri > 0
}

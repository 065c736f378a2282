// System errors as one line that names the path and the cause ("cannot create run directory
// /proc/moe-run: no such file or directory"), instead of Foundation's NSError descriptions
// (`Error Domain=NSCocoaErrorDomain Code=4 "The file doesn't exist." UserInfo={…}`).
import Foundation

/// A failure of the operating system on a named path (exit status 1: not caused by the inputs' contents).
public struct SystemError: Error, CustomStringConvertible {
    /// What was attempted, with the path: "cannot create run directory /proc/moe-run".
    public var what: String
    /// The cause, as strerror says it in lower case: "no such file or directory".
    public var cause: String
    public init(_ what: String, cause: String) { self.what = what; self.cause = cause }
    /// From the current errno.
    public init(_ what: String) { self.init(what, cause: SystemError.text(errno: errno)) }
    public var description: String { "\(what): \(cause)" }

    /// strerror's text with a lower-case first letter (it reads as the end of a sentence).
    public static func text(errno code: Int32) -> String {
        let s = String(cString: strerror(code))
        return s.prefix(1).lowercased() + s.dropFirst()
    }

    /// The cause of any error from Foundation's file APIs, as strerror would say it.
    public static func cause(of error: Error) -> String {
        if let e = error as? SystemError { return e.cause }
        let ns = error as NSError
        if ns.domain == NSPOSIXErrorDomain { return text(errno: Int32(ns.code)) }
        if let underlying = ns.userInfo[NSUnderlyingErrorKey] as? NSError { return cause(of: underlying) }
        if ns.domain == NSCocoaErrorDomain {
            switch ns.code {
            case NSFileNoSuchFileError, NSFileReadNoSuchFileError: return text(errno: ENOENT)
            case NSFileWriteOutOfSpaceError: return text(errno: ENOSPC)
            case NSFileWriteNoPermissionError, NSFileReadNoPermissionError: return text(errno: EACCES)
            case NSFileWriteVolumeReadOnlyError: return text(errno: EROFS)
            case NSFileWriteFileExistsError: return text(errno: EEXIST)
            default: break
            }
        }
        return "\(error)".split(whereSeparator: \.isNewline).joined(separator: " ")
    }

    /// Runs a file operation, turning whatever it throws into one SystemError line ("<what>: <cause>").
    public static func wrapping<T>(_ what: @autoclosure () -> String, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as SystemError { throw e } catch {
            throw SystemError(what(), cause: cause(of: error))
        }
    }
}

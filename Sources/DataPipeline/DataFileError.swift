// The one error type of the data pipeline: a file and what is wrong with it,
// printed as a single line ("path: problem").
import Foundation

/// A problem with a named file (token file, tokenizer, text input or output).
public struct DataFileError: Error, CustomStringConvertible, Equatable {
    public var path: String
    public var problem: String
    public init(_ path: String, _ problem: String) { self.path = path; self.problem = problem }
    public var description: String { "\(path): \(problem)" }
}

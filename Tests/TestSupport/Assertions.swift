// Shared test helpers: tolerance-stated comparisons that print the worst element.
import Foundation
import XCTest

/// The worst element of a comparison: index, both values and the error that failed.
public struct Mismatch: CustomStringConvertible {
    public var index: Int
    public var actual: Double
    public var expected: Double
    public var description: String { "worst at [\(index)]: got \(actual), expected \(expected)" }
}

/// Checks `|a - e| <= atol + rtol * |e|` element-wise; on failure reports the worst element.
public func assertClose<A: BinaryFloatingPoint, B: BinaryFloatingPoint>(
    _ actual: [A], _ expected: [B], rtol: Double, atol: Double,
    _ message: @autoclosure () -> String = "", file: StaticString = #filePath, line: UInt = #line
) {
    XCTAssertEqual(actual.count, expected.count, "length differs. \(message())", file: file, line: line)
    var worst: Mismatch? = nil
    var worstExcess = 0.0
    for i in 0 ..< min(actual.count, expected.count) {
        let a = Double(actual[i]), e = Double(expected[i])
        let excess = abs(a - e) - (atol + rtol * abs(e))
        if !(excess <= 0) && (worst == nil || excess > worstExcess || excess.isNaN) {
            worst = Mismatch(index: i, actual: a, expected: e); worstExcess = excess
        }
    }
    if let w = worst {
        XCTFail("not close (rtol \(rtol), atol \(atol)); \(w). \(message())", file: file, line: line)
    }
}

/// Scalar form of `assertClose`.
public func assertClose(_ actual: Double, _ expected: Double, rtol: Double, atol: Double,
                        _ message: @autoclosure () -> String = "", file: StaticString = #filePath, line: UInt = #line) {
    assertClose([actual], [expected], rtol: rtol, atol: atol, message(), file: file, line: line)
}

/// Path of the repository root (for fixtures) and of the WikiText-2 text the tests read.
public enum TestPaths {
    public static var repoRoot: String {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0 ..< 3 { url.deleteLastPathComponent() }   // Tests/TestSupport/Assertions.swift
        return url.path
    }
    /// The WikiText-2 splits: the whole ones in `MOE_DIST_WIKITEXT2` if set, else the excerpt committed in
    /// Tests/Fixtures/wikitext-2-excerpt (the first lines of each split, so a fresh clone needs nothing else).
    public static var wikitext2: String {
        ProcessInfo.processInfo.environment["MOE_DIST_WIKITEXT2"] ?? repoRoot + "/Tests/Fixtures/wikitext-2-excerpt"
    }
    /// Whether `wikitext2` is the whole data set (MOE_DIST_WIKITEXT2), not the committed excerpt.
    public static var wikitext2IsWhole: Bool { ProcessInfo.processInfo.environment["MOE_DIST_WIKITEXT2"] != nil }
    /// The path of one WikiText-2 file (`wiki.valid.tokens`, ...), or an error that names it and the variable:
    /// a missing file fails the test that needs it with that message (never a crash of the test process).
    public static func wikitext2File(_ name: String) throws -> String {
        let path = wikitext2 + "/" + name
        guard FileManager.default.isReadableFile(atPath: path) else {
            throw MissingTestData(message: "no WikiText-2 file \(path)"
                + (wikitext2IsWhole ? " (MOE_DIST_WIKITEXT2 must name a directory holding wiki.{train,valid,test}.tokens)"
                                    : " (the excerpt committed in Tests/Fixtures/wikitext-2-excerpt is missing)"))
        }
        return path
    }
    /// The built `moe-dist` binary: `MOE_DIST_BIN` if set, else `.build/debug/moe-dist`.
    public static var binary: String {
        ProcessInfo.processInfo.environment["MOE_DIST_BIN"] ?? repoRoot + "/.build/debug/moe-dist"
    }
}

/// A file a test reads is not there; thrown, it fails the test with this message.
public struct MissingTestData: Error, CustomStringConvertible, LocalizedError {
    public let message: String
    public var description: String { message }
    public var errorDescription: String? { message }
}

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

/// Path of the repository root (for fixtures) and of the shared WikiText-2 data beside it.
public enum TestPaths {
    public static var repoRoot: String {
        var url = URL(fileURLWithPath: #filePath)
        for _ in 0 ..< 3 { url.deleteLastPathComponent() }   // Tests/TestSupport/Assertions.swift
        return url.path
    }
    /// `../shared/data/wikitext-2` relative to the repository, or `MOE_DIST_WIKITEXT2` if set.
    public static var wikitext2: String {
        if let p = ProcessInfo.processInfo.environment["MOE_DIST_WIKITEXT2"] { return p }
        return URL(fileURLWithPath: repoRoot).deletingLastPathComponent()
            .appendingPathComponent("shared/data/wikitext-2").path
    }
    /// The built `moe-dist` binary: `MOE_DIST_BIN` if set, else `.build/debug/moe-dist`.
    public static var binary: String {
        ProcessInfo.processInfo.environment["MOE_DIST_BIN"] ?? repoRoot + "/.build/debug/moe-dist"
    }
}

// The only two ways a test may skip (nothing in Tests throws XCTSkip itself):
// - `missingTool`: tools some tests need (python3 with h5py, Hugging Face `tokenizers`, mpirun, the built
//   moe-dist binary, root for a tmpfs). In a developer's checkout a missing tool skips the test; with
//   MOE_DIST_REQUIRE_TOOLS=1 (set by scripts/test.sh, which CI runs) it fails it, since there a missing
//   tool is a broken set-up, not a pass.
// - `missingHardware`: a CPU feature the code under test needs (AVX2 + FMA, x86-64). Always a skip: that
//   code path does not run on such a machine at all.
import Foundation
import XCTest

public struct MissingToolError: Error, CustomStringConvertible {
    public var description: String
}

/// The error to throw when a tool is missing: XCTSkip, or a failure when MOE_DIST_REQUIRE_TOOLS=1.
public func missingTool(_ message: String) -> Error {
    if ProcessInfo.processInfo.environment["MOE_DIST_REQUIRE_TOOLS"] == "1" {
        return MissingToolError(description: message + " (MOE_DIST_REQUIRE_TOOLS=1: a missing tool fails the test)")
    }
    return XCTSkip(message)
}

/// The error to throw when this CPU lacks what the tested code path needs: always XCTSkip.
public func missingHardware(_ message: String) -> Error { XCTSkip(message) }

// MPI counts and displacements are C ints: all-to-all-v layouts beyond
// INT_MAX must be refused with a clear message, not wrapped around.
@testable import Collectives
import XCTest

final class MPICountLimitTests: XCTestCase {
    let big = Int(Int32.max)

    func testDisplacementsArePrefixSums() throws {
        let d = try MPICommunicator.cDisplacements([3, 0, 5], size: 3, buffer: 8, side: "send").get()
        XCTAssertEqual(d, [0, 3, 3])
    }

    func testLastDisplacementMayReachIntMax() throws {
        let d = try MPICommunicator.cDisplacements([big, 0], size: 2, buffer: big, side: "send").get()
        XCTAssertEqual(d, [0, Int32.max])
    }

    func testDisplacementBeyondIntMaxIsRefused() {
        let r = MPICommunicator.cDisplacements([big, 1, 1], size: 3, buffer: big + 2, side: "recv")
        XCTAssertThrowsError(try r.get()) { XCTAssertTrue("\($0)".contains("beyond INT_MAX"), "\($0)") }
        let c = MPICommunicator.cDisplacements([big + 1, 0], size: 2, buffer: big + 1, side: "send")
        XCTAssertThrowsError(try c.get()) { XCTAssertTrue("\($0)".contains("send count or displacement beyond INT_MAX"), "\($0)") }
    }

    func testWrongSizeNegativeAndOverlongCountsAreRefused() {
        XCTAssertThrowsError(try MPICommunicator.cDisplacements([1], size: 2, buffer: 9, side: "send").get())
        XCTAssertThrowsError(try MPICommunicator.cDisplacements([1, -1], size: 2, buffer: 9, side: "send").get())
        XCTAssertThrowsError(try MPICommunicator.cDisplacements([5, 5], size: 2, buffer: 9, side: "send").get()) {
            XCTAssertTrue("\($0)".contains("sum to 10 elements but the send buffer holds 9"), "\($0)")
        }
    }
}

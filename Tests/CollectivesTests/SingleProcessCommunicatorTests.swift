import Collectives
import XCTest

final class SingleProcessCommunicatorTests: XCTestCase {
    func testCollectivesAreCopiesOrNoOps() {
        let c = SingleProcessCommunicator()
        XCTAssertEqual([c.rank, c.size], [0, 1])
        var f: [Float] = [1.5, -2]
        f.withUnsafeMutableBufferPointer { c.allReduceSum($0) }
        XCTAssertEqual(f, [1.5, -2])
        XCTAssertEqual(c.allToAll([42]), [42])
        let send: [Float] = [1, 2, 3]
        var recv: [Float] = [0, 0, 0, 9]
        send.withUnsafeBufferPointer { s in
            recv.withUnsafeMutableBufferPointer { r in c.allToAllV(send: s, sendCounts: [3], recv: r, recvCounts: [3]) }
        }
        XCTAssertEqual(recv, [1, 2, 3, 9])
        var bytes: [UInt8] = [7, 8]
        bytes.withUnsafeMutableBytes { c.broadcast($0, root: 0) }
        XCTAssertEqual(bytes, [7, 8])
        let s = c.split(color: 3, key: 1)
        XCTAssertTrue(s is SingleProcessCommunicator)
        XCTAssertEqual([s.rank, s.size], [0, 1])
    }
}

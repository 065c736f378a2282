// The Int64 all-to-all-v (the token dispatcher's count exchange) in the in-process world at sizes 1 to 4 and
// in the world of one: rank s sends (s + 1)·(j + 1) values to rank j, each naming sender, receiver and index
// (beyond 2^53, which a Float or Double carrier would not hold exactly); every rank checks what it got
// against its own computation of what each sender sent.
import Collectives
import Foundation
import XCTest

final class Int64AllToAllVTests: XCTestCase {
    static func value(from s: Int, to j: Int, _ i: Int) -> Int64 { (Int64(1) << 60) + Int64(s) << 40 + Int64(j) << 20 + Int64(i) }

    private func exchange(_ comm: Communicator) -> (got: [Int64], expected: [Int64]) {
        let n = comm.size, me = comm.rank
        let sendCounts = (0 ..< n).map { j in (me + 1) * (j + 1) }
        let recvCounts = (0 ..< n).map { s in (s + 1) * (me + 1) }
        let send = (0 ..< n).flatMap { j in (0 ..< sendCounts[j]).map { Self.value(from: me, to: j, $0) } }
        var recv = [Int64](repeating: -1, count: recvCounts.reduce(0, +))
        send.withUnsafeBufferPointer { sp in
            recv.withUnsafeMutableBufferPointer { comm.allToAllV(send: sp, sendCounts: sendCounts, recv: $0, recvCounts: recvCounts) }
        }
        let expected = (0 ..< n).flatMap { s in (0 ..< recvCounts[s]).map { Self.value(from: s, to: me, $0) } }
        return (recv, expected)
    }

    func testThreadWorldSizes1To4() {
        for n in 1 ... 4 {
            let results = PerRank<Bool>()
            runWorldOK(size: n) { comm in
                let r = self.exchange(comm)
                results.set(comm.rank, r.got == r.expected)
            }
            for r in 0 ..< n { XCTAssertEqual(results[r], true, "size \(n), rank \(r)") }
        }
    }

    func testWorldOfOne() {
        let r = exchange(SingleProcessCommunicator())
        XCTAssertEqual(r.got, r.expected)
    }
}

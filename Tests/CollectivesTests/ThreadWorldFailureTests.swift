// A rank that fails must end the world, never hang it: ThreadWorld.run throws
// within a time bound, and the other ranks stop at their collectives.
import Collectives
import Foundation
import XCTest

struct InjectedError: Error, Equatable { let rank: Int }

final class ThreadWorldFailureTests: XCTestCase {
    func testThrowingRankEndsRanksWaitingInCollectives() {
        for n in [2, 3, 4] {
            let afterCollective = PerRank<Bool>()
            let error = runWorldFailing(size: n) { comm in
                if comm.rank == 1 { throw InjectedError(rank: 1) }
                var b: [Float] = [1, 2, 3]
                b.withUnsafeMutableBufferPointer { comm.allReduceSum($0) }
                afterCollective.set(comm.rank, true)   // must not run: rank 1 never joins
            }
            XCTAssertEqual(error as? InjectedError, InjectedError(rank: 1), "size \(n)")
            XCTAssertEqual(afterCollective.count, 0, "size \(n): a rank went past a collective that rank 1 never joined")
        }
    }

    func testRankFailingLaterEndsFutureCollectives() {
        let steps = PerRank<Int>()
        let error = runWorldFailing(size: 3) { comm in
            for step in 0 ..< 1000 {
                steps.set(comm.rank, step)
                if comm.rank == 2 && step == 10 { throw InjectedError(rank: 2) }
                comm.barrier()
            }
        }
        XCTAssertEqual(error as? InjectedError, InjectedError(rank: 2))
        XCTAssertEqual(steps[0], 10, "rank 0 should stop in the barrier of step 10")
        XCTAssertEqual(steps[1], 10)
    }

    func testFailureInsideASplitGroupEndsRanksOfOtherGroups() {
        let error = runWorldFailing(size: 4) { comm in
            let g = comm.split(color: comm.rank / 2, key: 0)
            if comm.rank == 3 { throw InjectedError(rank: 3) }
            g.barrier()           // ranks 0 and 1 pass; rank 2 waits for rank 3
            comm.barrier()        // ranks 0 and 1 wait here for ranks 2 and 3
        }
        XCTAssertEqual(error as? InjectedError, InjectedError(rank: 3))
    }

    func testAbortFailsTheWorldNamingTheRank() {
        let error = runWorldFailing(size: 3) { comm in
            if comm.rank == 2 { comm.abort(code: 3, message: "loss is NaN") }
            comm.barrier()
        }
        let text = "\(error.map { "\($0)" } ?? "")"
        XCTAssertTrue(error is CommunicatorError, "\(String(describing: error))")
        XCTAssertTrue(text.contains("rank 2") && text.contains("loss is NaN") && text.contains("code 3"), text)
    }

    func testMismatchedCollectivesFail() {
        let error = runWorldFailing(size: 2) { comm in
            if comm.rank == 0 { comm.barrier() } else {
                var b: [Double] = [1]
                b.withUnsafeMutableBufferPointer { comm.allReduceSum($0) }
            }
        }
        let text = "\(error.map { "\($0)" } ?? "")"
        XCTAssertTrue(text.contains("mismatch") && text.contains("barrier") && text.contains("allReduceSum"), text)
    }

    func testMismatchedReductionLengthsFail() {
        let error = runWorldFailing(size: 3) { comm in
            var b = [Float](repeating: 1, count: comm.rank == 1 ? 4 : 5)
            b.withUnsafeMutableBufferPointer { comm.allReduceSum($0) }
        }
        XCTAssertTrue("\(error.map { "\($0)" } ?? "")".contains("count: 4"))
    }

    func testInconsistentAllToAllVCountsFail() {
        let error = runWorldFailing(size: 2) { comm in
            let send = [Float](repeating: 0, count: 4)
            var recv = [Float](repeating: 0, count: 4)
            // Rank 0 sends 2 elements to rank 1, but rank 1 expects 1 from rank 0.
            let sendCounts = comm.rank == 0 ? [1, 2] : [1, 1]
            send.withUnsafeBufferPointer { s in
                recv.withUnsafeMutableBufferPointer { r in
                    comm.allToAllV(send: s, sendCounts: sendCounts, recv: r, recvCounts: [1, 1])
                }
            }
        }
        let text = "\(error.map { "\($0)" } ?? "")"
        XCTAssertTrue(text.contains("rank 0 sends 2 elements to rank 1, which expects 1"), text)
    }

    func testRankReturningEarlyFailsInsteadOfHanging() {
        let error = runWorldFailing(size: 3) { comm in
            if comm.rank == 0 { return }   // skips the barrier the others call
            comm.barrier()
        }
        let text = "\(error.map { "\($0)" } ?? "")"
        XCTAssertTrue(text.contains("rank 0 returned from its body"), text)
    }

    func testRanksWithoutCollectivesStillFinishAfterAFailure() {
        let finished = PerRank<Bool>()
        let error = runWorldFailing(size: 3) { comm in
            if comm.rank == 0 { throw InjectedError(rank: 0) }
            usleep(50_000)
            finished.set(comm.rank, true)
        }
        XCTAssertEqual(error as? InjectedError, InjectedError(rank: 0))
        XCTAssertEqual(finished.count, 2)
    }
}

// anyRank: every rank gets the same answer, true exactly when some rank's condition is true,
// for every subset of true ranks of worlds of 1 to 4 ranks.
import Collectives
import XCTest

final class RankAgreementTests: XCTestCase {
    func testAnyRankIsTheSameOnEveryRankAndTrueWhenSomeRankIs() {
        for n in 1 ... 4 {
            for subset in 0 ..< (1 << n) {
                let answers = PerRank<Bool>()
                runWorldOK(size: n) { comm in
                    answers.set(comm.rank, comm.anyRank(subset & (1 << comm.rank) != 0))
                }
                for r in 0 ..< n {
                    XCTAssertEqual(answers[r], subset != 0, "world of \(n), ranks true \(String(subset, radix: 2)), rank \(r)")
                }
            }
        }
    }
}

import Collectives
import XCTest

final class ExpertParallelLayoutTests: XCTestCase {
    func layout(_ w: Int, _ rank: Int, _ g: Int, _ e: Int) -> ExpertParallelLayout {
        try! ExpertParallelLayout(worldSize: w, rank: rank, expertParallel: g, numExperts: e)
    }

    func testFortyExpertsOverThreeRanks() {
        let l = layout(3, 0, 3, 40)
        XCTAssertEqual((0 ..< 3).map { l.experts(ofGroupRank: $0) }, [0 ..< 14, 14 ..< 27, 27 ..< 40])
    }

    func testSlicesCoverEveryExpertOnceAndOwnerAgrees() {
        for e in 1 ... 17 {
            for g in 1 ... e where g <= 8 {
                let l = layout(g, 0, g, e)
                let slices = (0 ..< g).map { l.experts(ofGroupRank: $0) }
                XCTAssertEqual(slices.flatMap { Array($0) }, Array(0 ..< e), "E=\(e) G=\(g)")
                // The first E % G ranks hold one more.
                XCTAssertEqual(slices.map(\.count), (0 ..< g).map { e / g + ($0 < e % g ? 1 : 0) }, "E=\(e) G=\(g)")
                for x in 0 ..< e {
                    XCTAssertTrue(slices[l.owner(ofExpert: x)].contains(x), "E=\(e) G=\(g) expert \(x)")
                }
            }
        }
    }

    func testGroupAndReplicaIndices() {
        // W = 6, G = 3: groups {0,1,2} {3,4,5}.
        let l4 = layout(6, 4, 3, 8)
        XCTAssertEqual(l4.groupIndex, 1)
        XCTAssertEqual(l4.groupRank, 1)
        XCTAssertEqual(l4.replicaIndex, 1)
        XCTAssertEqual(l4.replicaCount, 2)
        XCTAssertEqual(l4.localExperts, 3 ..< 6)
        XCTAssertEqual(l4.worldRank(ofGroupRank: 2), 5)
        let l2 = layout(6, 2, 3, 8)
        XCTAssertEqual([l2.groupIndex, l2.groupRank], [0, 2])
        XCTAssertEqual(l2.localExperts, 6 ..< 8)
    }

    func testErrorsNameTheKey() {
        XCTAssertThrowsError(try ExpertParallelLayout(worldSize: 4, rank: 0, expertParallel: 3, numExperts: 40)) {
            XCTAssertTrue("\($0)".contains("parallel.expert_parallel = 3 must divide the world size 4"), "\($0)")
        }
        XCTAssertThrowsError(try ExpertParallelLayout(worldSize: 8, rank: 0, expertParallel: 8, numExperts: 4)) {
            XCTAssertTrue("\($0)".contains("parallel.expert_parallel = 8 exceeds moe.num_experts = 4"), "\($0)")
        }
        XCTAssertThrowsError(try ExpertParallelLayout(worldSize: 4, rank: 0, expertParallel: 0, numExperts: 4)) {
            XCTAssertTrue("\($0)".contains("parallel.expert_parallel"), "\($0)")
        }
        XCTAssertThrowsError(try ExpertParallelLayout(worldSize: 4, rank: 4, expertParallel: 2, numExperts: 4))
        XCTAssertNoThrow(try ExpertParallelLayout(worldSize: 4, rank: 3, expertParallel: 4, numExperts: 4))
    }
}

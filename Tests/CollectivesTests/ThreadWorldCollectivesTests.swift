// Every collective of ThreadWorld at sizes 1 to 4, against values each test
// computes on its own from the rank-dependent inputs.
import Collectives
import Foundation
import XCTest

final class ThreadWorldCollectivesTests: XCTestCase {
    let sizes = [1, 2, 3, 4]

    func testAllReduceSumFloatIsRankOrderSumOnEveryRank() {
        for n in sizes {
            for count in [0, 1, 3, 5, 1000] {   // 3 and 5: some ranks reduce an empty slice
                let results = PerRank<[Float]>()
                runWorldOK(size: n) { comm in
                    var b = (0 ..< count).map { roundingValue(comm.rank, $0) }
                    b.withUnsafeMutableBufferPointer { comm.allReduceSum($0) }
                    results.set(comm.rank, b)
                }
                let expected = (0 ..< count).map { i in rankOrderSum(n) { roundingValue($0, i) } }
                for r in 0 ..< n {
                    XCTAssertEqual(results[r]?.map(\.bitPattern), expected.map(\.bitPattern), "size \(n), count \(count), rank \(r)")
                }
            }
        }
    }

    func testAllReduceSumDoubleAndInt64() {
        for n in sizes {
            let doubles = PerRank<[Double]>(), ints = PerRank<[Int64]>()
            func d(_ r: Int, _ i: Int) -> Double { 1.0 / Double(r + 7) - Double(i) * 0.3 }
            func l(_ r: Int, _ i: Int) -> Int64 { Int64(r + 1) * 3_000_000_000 - Int64(i) * Int64(r) }
            runWorldOK(size: n) { comm in
                var bd = (0 ..< 9).map { d(comm.rank, $0) }
                var bl = (0 ..< 9).map { l(comm.rank, $0) }
                bd.withUnsafeMutableBufferPointer { comm.allReduceSum($0) }
                bl.withUnsafeMutableBufferPointer { comm.allReduceSum($0) }
                doubles.set(comm.rank, bd); ints.set(comm.rank, bl)
            }
            let ed = (0 ..< 9).map { i in rankOrderSum(n) { d($0, i) } }
            let el = (0 ..< 9).map { i in (0 ..< n).reduce(Int64(0)) { $0 + l($1, i) } }
            for r in 0 ..< n {
                XCTAssertEqual(doubles[r]?.map(\.bitPattern), ed.map(\.bitPattern), "size \(n) rank \(r)")
                XCTAssertEqual(ints[r], el, "size \(n) rank \(r)")
            }
        }
    }

    func testAllReduceMax() {
        for n in sizes {
            let results = PerRank<[Double]>()
            func x(_ r: Int, _ i: Int) -> Double { i == 0 ? -.infinity : Double((r * 5 + i * 3) % 7) - 10 }
            runWorldOK(size: n) { comm in
                var b = (0 ..< 6).map { x(comm.rank, $0) }
                b.withUnsafeMutableBufferPointer { comm.allReduceMax($0) }
                results.set(comm.rank, b)
            }
            let expected = (0 ..< 6).map { i in (0 ..< n).map { x($0, i) }.max()! }
            for r in 0 ..< n { XCTAssertEqual(results[r], expected, "size \(n) rank \(r)") }
        }
    }

    func testAllToAll() {
        for n in sizes {
            let results = PerRank<[Int64]>()
            runWorldOK(size: n) { comm in
                results.set(comm.rank, comm.allToAll((0 ..< comm.size).map { Int64(comm.rank * 1000 + $0 * 7) }))
            }
            for r in 0 ..< n { XCTAssertEqual(results[r], (0 ..< n).map { Int64($0 * 1000 + r * 7) }, "size \(n) rank \(r)") }
        }
    }

    func testAllToAllVIrregularCountsWithZeros() {
        // count(i, j): elements rank i sends to rank j; rank 1 sends nothing at all.
        func count(_ i: Int, _ j: Int) -> Int { i == 1 ? 0 : (i * 2 + j * 3) % 4 }
        func value(_ i: Int, _ j: Int, _ k: Int) -> Float { Float(i * 100 + j * 10 + k) }
        for n in sizes {
            let results = PerRank<[Float]>()
            runWorldOK(size: n) { comm in
                let me = comm.rank
                var send: [Float] = []
                for j in 0 ..< n { for k in 0 ..< count(me, j) { send.append(value(me, j, k)) } }
                let recvCounts = (0 ..< n).map { count($0, me) }
                var recv = [Float](repeating: .nan, count: recvCounts.reduce(0, +) + 2)   // 2 spare at the end
                send.withUnsafeBufferPointer { s in
                    recv.withUnsafeMutableBufferPointer { r in
                        comm.allToAllV(send: s, sendCounts: (0 ..< n).map { count(me, $0) }, recv: r, recvCounts: recvCounts)
                    }
                }
                results.set(me, recv)
            }
            for r in 0 ..< n {
                var expected: [Float] = []
                for i in 0 ..< n { for k in 0 ..< count(i, r) { expected.append(value(i, r, k)) } }
                let got = results[r]!
                XCTAssertEqual(Array(got.prefix(expected.count)), expected, "size \(n) rank \(r)")
                XCTAssertTrue(got.suffix(2).allSatisfy(\.isNaN), "size \(n) rank \(r): wrote past the received elements")
            }
        }
    }

    func testBroadcastFromEveryRoot() {
        for n in sizes {
            for root in (0 ..< n).reversed() {   // the last rank first: a non-zero root whenever n > 1
                let results = PerRank<[UInt8]>()
                runWorldOK(size: n) { comm in
                    var b = (0 ..< 33).map { UInt8(truncatingIfNeeded: comm.rank * 50 + $0) }
                    b.withUnsafeMutableBytes { comm.broadcast($0, root: root) }
                    results.set(comm.rank, b)
                }
                let expected = (0 ..< 33).map { UInt8(truncatingIfNeeded: root * 50 + $0) }
                for r in 0 ..< n { XCTAssertEqual(results[r], expected, "size \(n) root \(root) rank \(r)") }
            }
        }
    }

    func testBarrierHoldsEveryRankUntilAllArrive() {
        for n in sizes {
            let arrivals = PerRank<Bool>()
            let seen = PerRank<Int>()
            runWorldOK(size: n) { comm in
                usleep(UInt32(20_000 * (comm.size - comm.rank)))   // rank 0 arrives last
                arrivals.set(comm.rank, true)
                comm.barrier()
                seen.set(comm.rank, arrivals.count)
            }
            for r in 0 ..< n { XCTAssertEqual(seen[r], n, "size \(n) rank \(r) left the barrier early") }
        }
    }

    func testSplitIntoGroupsThenReduceWithin() {
        for n in sizes {
            let results = PerRank<(rank: Int, size: Int, sum: Int64, singleton: Int)>()
            runWorldOK(size: n) { comm in
                // Two groups by parity, ordered by descending world rank.
                let g = comm.split(color: comm.rank % 2, key: -comm.rank)
                var b = [Int64(comm.rank + 1) * 10]
                b.withUnsafeMutableBufferPointer { g.allReduceSum($0) }
                // Then one group per rank, split from the parity group.
                let single = g.split(color: g.rank, key: 0)
                results.set(comm.rank, (g.rank, g.size, b[0], single.size))
            }
            for r in 0 ..< n {
                let members = (0 ..< n).filter { $0 % 2 == r % 2 }.sorted(by: >)
                let got = results[r]!
                XCTAssertEqual(got.rank, members.firstIndex(of: r), "size \(n) rank \(r)")
                XCTAssertEqual(got.size, members.count, "size \(n) rank \(r)")
                XCTAssertEqual(got.sum, members.reduce(Int64(0)) { $0 + Int64($1 + 1) * 10 }, "size \(n) rank \(r)")
                XCTAssertEqual(got.singleton, 1)
            }
        }
    }

    func testSplitGroupsRunCollectivesIndependently() {
        // Groups of consecutive pairs reduce different amounts of data at the same time.
        let results = PerRank<[Double]>()
        runWorldOK(size: 4) { comm in
            let g = comm.split(color: comm.rank / 2, key: comm.rank)
            var b = [Double](repeating: Double(comm.rank), count: 3 + comm.rank / 2)
            for _ in 0 ..< 50 { b.withUnsafeMutableBufferPointer { g.allReduceMax($0) } }
            b.withUnsafeMutableBufferPointer { g.allReduceSum($0) }
            results.set(comm.rank, b)
        }
        XCTAssertEqual(results[0], [2, 2, 2])
        XCTAssertEqual(results[1], [2, 2, 2])
        XCTAssertEqual(results[2], [6, 6, 6, 6])
        XCTAssertEqual(results[3], [6, 6, 6, 6])
    }

    func testRepeatedRunsAreBitIdentical() {
        func once() -> [[UInt32]] {
            let results = PerRank<[UInt32]>()
            runWorldOK(size: 4) { comm in
                var b = (0 ..< 257).map { roundingValue(comm.rank, $0) * Float(comm.rank + 1) }
                for step in 0 ..< 5 {
                    usleep(UInt32.random(in: 0 ..< 3000))   // perturb which rank arrives first
                    b.withUnsafeMutableBufferPointer { comm.allReduceSum($0) }
                    for i in b.indices { b[i] = b[i] / 3 + Float(step) * 0.01 }
                }
                results.set(comm.rank, b.map(\.bitPattern))
            }
            return (0 ..< 4).map { results[$0] ?? [] }
        }
        let first = once(), second = once()
        XCTAssertEqual(first, second, "two runs differ")
        for r in 1 ..< 4 { XCTAssertEqual(first[r], first[0], "rank \(r) differs from rank 0") }
    }

    func testExpertParallelCommunicators() {
        // W = 4, G = 2: expert groups {0,1} {2,3}; replica groups {0,2} {1,3}.
        let results = PerRank<(expert: [Int64], replica: [Int64])>()
        runWorldOK(size: 4) { comm in
            let layout = try ExpertParallelLayout(worldSize: 4, rank: comm.rank, expertParallel: 2, numExperts: 5)
            let c = layout.communicators(from: comm)
            let e = c.expertGroup.allToAll(Array(repeating: Int64(comm.rank), count: c.expertGroup.size))
            let r = c.replicaGroup.allToAll(Array(repeating: Int64(comm.rank), count: c.replicaGroup.size))
            results.set(comm.rank, (e, r))
        }
        XCTAssertEqual(results[0]?.expert, [0, 1]); XCTAssertEqual(results[0]?.replica, [0, 2])
        XCTAssertEqual(results[1]?.expert, [0, 1]); XCTAssertEqual(results[1]?.replica, [1, 3])
        XCTAssertEqual(results[2]?.expert, [2, 3]); XCTAssertEqual(results[2]?.replica, [0, 2])
        XCTAssertEqual(results[3]?.expert, [2, 3]); XCTAssertEqual(results[3]?.replica, [1, 3])
    }

    func testSelfTestPassesOnThreadWorlds() {
        // A hang detector: the whole self-test on 4 ranks takes seconds, but 20 s ran out under Address
        // Sanitizer on a busy 2-core machine (scripts/test_sanitizers.sh).
        for n in sizes {
            runWorldOK(size: n, timeout: 120) { comm in try CollectiveSelfTest.run(comm) }
        }
    }
}

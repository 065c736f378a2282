// Blas.parallel on its worker pools: every part of a region runs exactly once and the region returns after
// all of them, whatever the worker count (pools grow to the most asked for), when a body opens a region of
// its own (on the caller's thread, which then uses dispatch's threads, or on a pool thread, which gets a pool
// of its own), and when several threads (the ranks of an in-process world) open regions at once, each on
// its own pool. Each part counts its runs in its own slot, checked against one per part per region.
import XCTest
import Foundation
import Kernels

final class WorkerPoolTests: XCTestCase {
    /// runs[w]: how many times part w has run (each slot written by its part alone).
    private final class Runs: @unchecked Sendable {
        let counts: UnsafeMutablePointer<Int>
        let size: Int
        init(_ size: Int) { self.size = size; counts = .allocate(capacity: size); counts.initialize(repeating: 0, count: size) }
        deinit { counts.deallocate() }
        var array: [Int] { Array(UnsafeBufferPointer(start: counts, count: size)) }
    }

    func testEveryPartRunsOncePerRegion() {
        for workers in [1, 2, 3, 5, 2, 4] {
            let runs = Runs(workers)
            for _ in 0 ..< 200 { Blas.parallel(workers: workers) { w in runs.counts[w] += 1 } }
            XCTAssertEqual(runs.array, [Int](repeating: 200, count: workers), "\(workers) workers")
        }
    }

    func testNestedRegions() {
        let outer = 3, inner = 2
        let runs = Runs(outer * inner)
        for _ in 0 ..< 50 {
            Blas.parallel(workers: outer) { o in
                Blas.parallel(workers: inner) { i in runs.counts[o * inner + i] += 1 }
            }
        }
        XCTAssertEqual(runs.array, [Int](repeating: 50, count: outer * inner))
    }

    func testRegionsFromSeveralThreadsAtOnce() {
        let threads = 3, workers = 3, regions = 300
        let runs = (0 ..< threads).map { _ in Runs(workers) }
        let done = DispatchGroup()
        for t in 0 ..< threads {
            let r = runs[t]
            done.enter()
            Thread.detachNewThread {
                for _ in 0 ..< regions {
                    Blas.parallel(workers: workers) { w in
                        var x = 0.0
                        for i in 0 ..< 100 * (w + 1) { x += Double(i) }   // parts of unequal length
                        if x >= 0 { r.counts[w] += 1 }
                    }
                }
                done.leave()
            }
        }
        XCTAssertEqual(done.wait(timeout: .now() + 120), .success, "regions did not finish")
        for t in 0 ..< threads { XCTAssertEqual(runs[t].array, [Int](repeating: regions, count: workers), "thread \(t)") }
    }
}

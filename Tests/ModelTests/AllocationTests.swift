// A training step allocates nothing once the first step has sized its buffers: heap allocations of every
// thread are counted (MallocCounter replaces malloc and friends in the test binary) over three
// forward+backward micro-steps after two warm-up steps, and must be zero: on one rank with one and with three
// threads, and on two ranks of an in-process world with three threads each (the token exchange, expert
// lending, the packed expert products and the parallel regions of the rank's threads: Blas.parallel's
// WorkerPool makes its threads in the warm-up steps). The counter itself is checked to see an allocation, so
// the test cannot pass by counting nothing. Run with MALLOC_COUNTER_TRACE=1 to print a backtrace of every
// counted allocation.
import XCTest
import Foundation
import Collectives
import Configuration
import Kernels
import MallocCounter
@testable import Model

final class AllocationTests: XCTestCase {
    func testCounterSeesAnAllocation() {
        malloc_counter_start()
        let a = [Int](repeating: 3, count: 1000 + Int.random(in: 0 ..< 2))
        let n = malloc_counter_stop()
        XCTAssertEqual(a.count >= 1000, true)
        XCTAssertGreaterThan(n, 0, "the malloc counter did not count an array allocation")
    }

    private func assertNoAllocation(_ name: String, threads: Int, B: Int = 2, T: Int = 8,
                                    _ edit: (inout RunConfig) -> Void = { _ in },
                                    file: StaticString = #filePath, line: UInt = #line) {
        let c = tinyConfig(edit)
        let saved = Blas.configuredThreads
        Blas.numThreads = threads
        defer { Blas.numThreads = saved }
        let model = RecurrentMoEModel(config: c, ctx: .single(numExperts: c.moe.numExperts))
        XCTAssertEqual(model.ctx.blasWorkers, threads, file: file, line: line)
        let (x, y) = tokenBatch(B: B, T: T, V: c.model.vocabSize, seed: 5)
        let scales = LossScales(ce: 1 / Double(B * T), aux: 0.01, z: 0.001)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeBufferPointer { yp in
                func step() -> Double {
                    let r = model.step(inputs: xp.baseAddress!, targets: yp.baseAddress!, B: B, T: T, scales: scales,
                                       applyCapacity: true, backward: true)
                    return r.ceSum + (r.routing.isEmpty ? 0 : r.routing[0].aux)
                }
                var loss = step() + step()
                // The counter sees every thread, and a libdispatch worker that starts meanwhile (outside the
                // model) allocates its thread state once. A step's own allocations recur in every window of
                // steps, so the fewest over up to three windows is what the model allocates.
                var fewest = Int64.max
                for _ in 0 ..< 3 where fewest > 0 {
                    malloc_counter_start()
                    for _ in 0 ..< 3 { loss += step() }
                    fewest = min(fewest, malloc_counter_stop())
                }
                XCTAssertTrue(loss.isFinite)
                XCTAssertEqual(fewest, 0, "\(name), \(threads) threads: heap allocations in each window of 3 steps after the first",
                               file: file, line: line)
            }
        }
    }

    func testMoEStep() {
        for threads in [1, 3] { assertNoAllocation("moe", threads: threads) }
    }
    func testMoEStepWithCapacityDropsAndSwiglu() {
        for threads in [1, 3] {
            assertNoAllocation("moe capacity swiglu", threads: threads) { $0.moe.capacityFactor = 0.5; $0.moe.activation = .swiglu }
        }
    }
    func testIndexedDenseStep() {
        for threads in [1, 3] {
            assertNoAllocation("dense indexed", threads: threads) {
                $0.moe.numExperts = 0; $0.model.trunk = .indexed; $0.moe.experts = .indexed
            }
        }
    }

    /// Two ranks, one expert group, three threads each: the count and row exchanges, lending (every loan the
    /// plan allows, and the default policy) and the packed products where this CPU runs them, with the
    /// attention heads and experts side by side on each rank's threads. The ranks run their threads as MPI
    /// ranks would (UncountedCommunicator(aloneInProcess:); an in-process world otherwise gives each rank one,
    /// see `ParallelContext.blasWorkers`). The counter sees every thread, all but inside the in-process
    /// world's own collectives (UncountedCommunicator: test machinery, not the model).
    func testMoEStepsOnTwoRanksWithLendingAndPacking() throws {
        let threads = 3, saved = Blas.configuredThreads
        Blas.numThreads = threads
        defer { Blas.numThreads = saved }
        let eager = ExpertLendingPolicy(enabled: true, transferRows: 0, maxLoans: 4)
        for (name, policy, edit) in [("eager lending gelu", eager, { (_: inout RunConfig) in }),
                                     ("eager lending swiglu capacity", eager,
                                      { $0.moe.activation = .swiglu; $0.moe.capacityFactor = 0.7 }),
                                     ("default lending", ExpertLendingPolicy.automatic(threads: threads), { _ in })] {
            let c = tinyConfig { $0.moe.numExperts = 12; edit(&$0) }
            final class Counts: @unchecked Sendable {
                var allocations: Int64 = -1, loans = 0, packed = false, workers: [Int] = []
            }
            let counts = Counts()
            try ThreadWorld.run(size: 2) { threadRank in
                let comm = UncountedCommunicator(threadRank, aloneInProcess: true)
                var ctx = try ParallelContext.make(world: comm, expertParallel: 2, numExperts: c.moe.numExperts)
                if comm.rank == 0 { counts.workers = ctx.blasWorkersByRank }   // every rank's, gathered by make
                ctx.expertLending = policy
                ctx.expertKernel = PackedMatmul.best
                let model = RecurrentMoEModel(config: c, ctx: ctx)
                let B = 2, T = c.model.seqLen
                let (x, y) = tokenBatch(B: B, T: T, V: c.model.vocabSize, seed: UInt64(5 + comm.rank))
                let scales = LossScales(ce: 1 / Double(B * T), aux: 0.01, z: 0.001)
                x.withUnsafeBufferPointer { xp in
                    y.withUnsafeBufferPointer { yp in
                        func step() {
                            _ = model.step(inputs: xp.baseAddress!, targets: yp.baseAddress!, B: B, T: T, scales: scales,
                                           applyCapacity: true, backward: true)
                        }
                        step(); step()
                        comm.barrier()
                        let loansBefore = ctx.lendingCounter.loans
                        if comm.rank == 0 { malloc_counter_start() }
                        comm.barrier()
                        for _ in 0 ..< 3 { step() }
                        comm.barrier()
                        if comm.rank == 0 {
                            counts.allocations = malloc_counter_stop()
                            counts.loans = ctx.lendingCounter.loans - loansBefore
                            counts.packed = ctx.expertKernel != nil
                        }
                    }
                }
            }
            XCTAssertEqual(counts.workers, [threads, threads], "\(name): threads per rank")
            XCTAssertEqual(counts.allocations, 0, "\(name): heap allocations in 3 steps after the first, both ranks")
            if policy == eager { XCTAssertGreaterThan(counts.loans, 0, "\(name): nothing was lent in the counted steps") }
            XCTAssertEqual(counts.packed, PackedMatmul.isAvailable, name)
        }
    }
}

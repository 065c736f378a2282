// Heap allocations of whole optimizer steps (MallocCounter, every thread), one BLAS thread (see
// ModelTests/AllocationTests): after the first steps the count per step stays flat and small. The model,
// the optimizer and the trainer allocate nothing (the report's arrays are reused in place when the caller
// has let go of the previous report, as here); what is left is the data loader's per-step window lists
// (BatchLoader.nextStepWindows / rankShare: a few small arrays, a few more in a debug build).
import XCTest
import Kernels
import MallocCounter
import Model
@testable import Training

final class TrainerAllocationTests: XCTestCase {
    func testAllocationsPerStepStayFlatAndSmall() throws {
        let threads = Blas.configuredThreads
        Blas.numThreads = 1
        defer { Blas.numThreads = threads }
        let (c, data) = try tinyRun(["train.max_steps=20"])
        let trainer = try Trainer(config: c, ctx: .single(numExperts: c.moe.numExperts), train: data.train)
        for _ in 0 ..< 2 { XCTAssertTrue(trainer.trainStep().loss.isFinite) }
        var perStep: [Int64] = []
        perStep.reserveCapacity(8)
        for _ in 0 ..< 6 {
            malloc_counter_start()
            let loss = trainer.trainStep().loss
            perStep.append(malloc_counter_stop())
            XCTAssertTrue(loss.isFinite)
        }
        print("trainer allocations per step: \(perStep)")
        XCTAssertLessThanOrEqual(perStep.max()!, 16, "allocations per step \(perStep)")
        XCTAssertLessThanOrEqual(perStep.last!, perStep.first!, "allocations grow from step to step: \(perStep)")
    }
}

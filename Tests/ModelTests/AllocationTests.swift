// A training step allocates nothing once the first step has sized its buffers: heap allocations of every
// thread are counted (MallocCounter replaces malloc and friends in the test binary) over three
// forward+backward micro-steps after two warm-up steps, and must be zero. The counter itself is checked
// to see an allocation, so the test cannot pass by counting nothing. Run with MALLOC_COUNTER_TRACE=1 to
// print a backtrace of every counted allocation.
import XCTest
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

    private func assertNoAllocation(_ name: String, B: Int = 2, T: Int = 8, _ edit: (inout RunConfig) -> Void = { _ in },
                                    file: StaticString = #filePath, line: UInt = #line) {
        let c = tinyConfig(edit)
        // One BLAS thread: Blas.parallel then runs its body inline. With more, each parallel region (attention
        // heads, experts) costs DispatchQueue.concurrentPerform's own four small allocations, outside the model.
        let threads = Blas.configuredThreads
        Blas.numThreads = 1
        defer { Blas.numThreads = threads }
        let model = RecurrentMoEModel(config: c, ctx: .single(numExperts: c.moe.numExperts))
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
                malloc_counter_start()
                for _ in 0 ..< 3 { loss += step() }
                let allocations = malloc_counter_stop()
                XCTAssertTrue(loss.isFinite)
                XCTAssertEqual(allocations, 0, "\(name): heap allocations in 3 steps after the first", file: file, line: line)
            }
        }
    }

    func testMoEStep() { assertNoAllocation("moe") }
    func testMoEStepWithCapacityDropsAndSwiglu() {
        assertNoAllocation("moe capacity swiglu") { $0.moe.capacityFactor = 0.5; $0.moe.activation = .swiglu }
    }
    func testIndexedDenseStep() {
        assertNoAllocation("dense indexed") { $0.moe.numExperts = 0; $0.model.trunk = .indexed; $0.moe.experts = .indexed }
    }
}

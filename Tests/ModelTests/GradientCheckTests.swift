// Whole-model gradient checks: the analytic gradient of every parameter tensor
// against central finite differences of the Float model with a Double-accumulated
// loss, routing decisions replayed (see GradientCheck). Tolerance: relative error
// below 5e-3 per tensor (observed ≤ 1e-3: Float rounding); the observed errors are printed.
import XCTest
import Configuration
import Model
import TestSupport

final class GradientCheckTests: XCTestCase {
    /// `expectDrops`: the capacity limit must drop assignments of this batch (else the check proves nothing
    /// about the dropped path); asserted from the routing statistics of one forward of the same batch.
    private func check(_ name: String, B: Int = 2, T: Int = 8, expectDrops: Bool = false,
                       _ edit: (inout RunConfig) -> Void = { _ in }, file: StaticString = #filePath, line: UInt = #line) {
        let c = tinyConfig(edit)
        let model = RecurrentMoEModel(config: c, ctx: .single(numExperts: c.moe.numExperts))
        let (x, y) = tokenBatch(B: B, T: T, V: c.model.vocabSize, seed: 5)
        if expectDrops {
            let forward = x.withUnsafeBufferPointer { xp in y.withUnsafeBufferPointer { yp in
                model.step(inputs: xp.baseAddress!, targets: yp.baseAddress!, B: B, T: T,
                           scales: LossScales(ce: 1, aux: 0, z: 0), applyCapacity: true, backward: false)
            } }
            let dropped = forward.routing.map(\.dropped)
            XCTAssertEqual(dropped.count, c.model.depth, file: file, line: line)
            XCTAssertGreaterThan(dropped.reduce(0, +), 0, "\(name): no assignment was dropped", file: file, line: line)
            print("gradcheck \(name): dropped per iteration \(dropped)")
        }
        let rows = GradientCheck.run(model: model, inputs: x, targets: y, B: B, T: T)
        XCTAssertEqual(rows.count, model.store.infos.count, file: file, line: line)
        for r in rows {
            let msg = "\(name) \(r.path): analytic \(r.analytic) numeric \(r.numeric) rel \(r.relativeError)"
            if r.relativeError > 5e-3 { XCTFail(msg, file: file, line: line) }
        }
        let worst = rows.max { $0.relativeError < $1.relativeError }!
        print("gradcheck \(name): worst \(worst.path) rel \(worst.relativeError)")
    }

    func testSharedTrunkSharedExperts() { check("shared/shared") }
    func testIndexedTrunk() { check("trunk indexed") { $0.model.trunk = .indexed } }
    func testIndexedExperts() { check("experts indexed") { $0.moe.experts = .indexed } }
    func testDenseGelu() { check("dense gelu") { $0.moe.numExperts = 0 } }
    func testDenseSwiglu() { check("dense swiglu") { $0.moe.numExperts = 0; $0.moe.activation = .swiglu } }
    func testSwigluExperts() { check("swiglu experts") { $0.moe.activation = .swiglu } }
    func testNoDepthEmbedding() { check("no depth embedding") { $0.model.depthEmbedding = false } }
    func testUntiedHead() { check("untied head") { $0.model.tieEmbeddings = false } }
    func testTopOne() { check("top-1") { $0.moe.topK = 1 } }
    func testTopAll() { check("top-k = E") { $0.moe.topK = 4 } }
    func testUnnormalizedGates() { check("gates not renormalised") { $0.moe.normalizeGates = false } }
    func testCapacityDrops() {
        // c = 0.5: C = ceil(0.5·2·16/4) = 4 of the 8 assignments per expert on average, so drops happen.
        check("capacity 0.5", expectDrops: true) { $0.moe.capacityFactor = 0.5 }
    }
    func testShorterSequence() { check("T < seq_len", B: 3, T: 5) }
}

// The rank's BLAS threads run attention heads, experts (each thread taking the next busiest expert) and the
// loss rows side by side. Which thread runs what must not change a single bit. (Norms, rotary embeddings, the
// dispatcher's row loops and large products split only above this model's sizes, N·d = 32768 values and 2²²
// multiply-adds; their own tests check them.)
// every gradient and the routing statistics of a step are compared, bit for bit, between one thread and
// three (odd, so shares and row blocks split unevenly) on a model whose experts receive uneven rows. The
// summed loss adds the threads' partial sums in order, so it is compared to 1e-12 relative.
import XCTest
import Configuration
import Kernels
@testable import Model

final class ThreadInvarianceTests: XCTestCase {
    private struct StepResult: Equatable {
        var loss: Double
        var aux: [Double]
        var grads: [Float]
    }

    private func step(threads: Int, _ c: RunConfig, B: Int, T: Int) -> StepResult {
        let saved = Blas.configuredThreads
        Blas.numThreads = threads
        defer { Blas.numThreads = saved }
        let model = RecurrentMoEModel(config: c, ctx: .single(numExperts: c.moe.numExperts))
        XCTAssertEqual(model.ctx.blasWorkers, threads)
        let (x, y) = tokenBatch(B: B, T: T, V: c.model.vocabSize, seed: 11)
        let scales = LossScales(ce: 1 / Double(B * T), aux: 0.01, z: 0.001)
        model.store.zeroGrads()
        let r = x.withUnsafeBufferPointer { xp in
            y.withUnsafeBufferPointer { yp in
                model.step(inputs: xp.baseAddress!, targets: yp.baseAddress!, B: B, T: T, scales: scales,
                           applyCapacity: true, backward: true)
            }
        }
        return StepResult(loss: r.ceSum, aux: r.routing.map(\.aux),
                          grads: Array(UnsafeBufferPointer(start: model.store.grads, count: model.store.count)))
    }

    private func assertSameOnOneAndThreeThreads(_ name: String, B: Int = 3, T: Int = 40,
                                                _ edit: (inout RunConfig) -> Void = { _ in },
                                                file: StaticString = #filePath, line: UInt = #line) {
        let c = tinyConfig {
            $0.model.seqLen = 40; $0.model.dModel = 24; $0.model.nHeads = 3
            $0.moe.numExperts = 7; $0.moe.dFF = 20
            edit(&$0)
        }
        let one = step(threads: 1, c, B: B, T: T)
        let three = step(threads: 3, c, B: B, T: T)
        XCTAssertTrue(one.loss.isFinite, "\(name): loss", file: file, line: line)
        XCTAssertEqual(one.loss, three.loss, accuracy: 1e-12 * abs(one.loss), "\(name): loss", file: file, line: line)
        XCTAssertEqual(one.aux, three.aux, "\(name): aux losses differ", file: file, line: line)
        let differing = zip(one.grads, three.grads).filter { $0.bitPattern != $1.bitPattern }.count
        XCTAssertEqual(differing, 0, "\(name): \(differing) of \(one.grads.count) gradients differ", file: file, line: line)
        XCTAssertGreaterThan(one.grads.filter { $0 != 0 }.count, one.grads.count / 2, "\(name): gradients mostly zero",
                             file: file, line: line)
    }

    func testMoEStep() { assertSameOnOneAndThreeThreads("gelu experts") }
    func testSwigluWithCapacityDrops() {
        assertSameOnOneAndThreeThreads("swiglu, capacity 0.5") { $0.moe.activation = .swiglu; $0.moe.capacityFactor = 0.5 }
    }
    /// Two experts on three threads: they run one after another with their products given the threads.
    func testFewerExpertsThanThreads() { assertSameOnOneAndThreeThreads("2 experts") { $0.moe.numExperts = 2 } }
    func testDenseStep() { assertSameOnOneAndThreeThreads("dense") { $0.moe.numExperts = 0 } }
}

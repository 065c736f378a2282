// The experts' packed products (PackedMatmul, every kernel this CPU runs) against the BLAS products they
// replace, through whole
// model steps: loss and every gradient agree, and a pack made in one step is never reused after the weights
// change (an evaluation-like forward pass, then new weights, then a training step).
import XCTest
import TestSupport
import Configuration
@testable import Kernels
@testable import Model

final class PackedExpertProductsTests: XCTestCase {
    override func setUpWithError() throws {
        guard PackedMatmul.isAvailable else { throw missingHardware("PackedMatmul needs AVX2 + FMA; this CPU runs the BLAS products") }
    }

    /// (loss, gradients) of a training step that follows a forward-only step and a change of every parameter
    /// (the forward products' packs of the first step must not be reused), with `kernel` (nil: BLAS).
    private func twoSteps(_ c: RunConfig, kernel: PackedMatmul.Kernel?) -> (Double, [Float]) {
        var ctx = ParallelContext.single(numExperts: c.moe.numExperts)
        ctx.expertKernel = kernel
        let model = RecurrentMoEModel(config: c, ctx: ctx)
        let B = 3, T = c.model.seqLen
        let batch = tokenBatch(B: B, T: T, V: c.model.vocabSize, seed: 5)
        var loss = 0.0
        for step in 0 ..< 2 {
            let s = model.store
            s.grads.update(repeating: 0, count: s.count)
            let r = model.step(inputs: batch.inputs, targets: batch.targets, B: B, T: T,
                               scales: LossScales(ce: 1, aux: 0.01, z: 0.001), applyCapacity: true, backward: step == 1)
            loss = r.ceSum
            if step == 0 { for i in 0 ..< s.count { s.params[i] *= 1 + 0.1 * Float(i % 7 - 3) } }   // new weights
        }
        return (loss, Array(UnsafeBufferPointer(start: model.store.grads, count: model.store.count)))
    }

    /// d_ff 70 and d 24 leave partial 16- and 64-column panels; gelu and swiglu (per-iteration experts keep
    /// BLAS). The kernels agree with each other to the bit.
    func testPackedProductsGiveTheBLASLossAndGradients() {
        let edits: [(String, (inout RunConfig) -> Void)] = [
            ("gelu shared", { $0.model.dModel = 24; $0.model.nHeads = 2; $0.moe.dFF = 70 }),
            ("swiglu, trunk indexed", { $0.moe.activation = .swiglu; $0.model.trunk = .indexed; $0.model.depth = 3 }),
        ]
        for (name, edit) in edits {
            let c = tinyConfig(edit)
            let (lossB, gradB) = twoSteps(c, kernel: nil)
            var first: (PackedMatmul.Kernel, Double, [Float])?
            for kernel in PackedMatmul.runnableKernels {
                let name = "\(name), \(kernel)"
                let (lossP, gradP) = twoSteps(c, kernel: kernel)
                // float32 products summed in a different order: agreement to ~1e-6 relative; 1e-4 scaled bounds it
                XCTAssertEqual(lossP, lossB, accuracy: 1e-5 * abs(lossB), name)
                let scale = gradB.map { abs($0) }.max() ?? 1
                var worst: Float = 0
                for i in gradB.indices { worst = max(worst, abs(gradP[i] - gradB[i])) }
                XCTAssertLessThan(worst, 1e-4 * scale, "\(name): largest gradient difference \(worst) of \(scale)")
                XCTAssertNotEqual(gradP, gradB, "\(name): the packed products did not run")
                if let (k0, loss0, grad0) = first {
                    XCTAssertEqual(lossP, loss0, "\(name) against \(k0)")
                    XCTAssertEqual(gradP, grad0, "\(name) against \(k0)")
                } else {
                    first = (kernel, lossP, gradP)
                }
            }
        }
    }
}

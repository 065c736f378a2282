// Gradient dump (SPEC section 9), for comparing against other implementations:
// for a checkpoint, a token file, a batch size B and an offset o, sequence b has
// inputs x[o + b·T ..< o + b·T + T] and the next tokens as targets; the dump holds
// /grads/<path> for every parameter (gradient of the SPEC section 3 loss for that
// single micro-batch, world size 1) and root attributes loss, ce, aux, z.
import Foundation
import Configuration
import DataPipeline
import HDF5
import Model

public enum GradientDump {
    public struct Result: Sendable { public var loss, ce, aux, z: Double }

    public static func write(checkpoint: String, data: TokenSource, batch B: Int, offset o: Int, to out: String) throws -> Result {
        let config = try Checkpoint.readState(checkpoint).config
        let T = config.model.seqLen, R = config.model.depth
        guard data.vocabSize <= config.model.vocabSize else {
            throw TrainingError("token file vocabulary \(data.vocabSize) exceeds the checkpoint's model.vocab_size \(config.model.vocabSize)")
        }
        guard B >= 1, o >= 0, o + (B - 1) * T + T + 1 <= data.count else {
            throw TrainingError("batch \(B) of \(T)-token sequences from offset \(o) needs \(o + B * T + 1) tokens; the file has \(data.count)")
        }
        let model = RecurrentMoEModel(config: config, ctx: .single(numExperts: max(config.moe.numExperts, 1)))
        try Checkpoint.loadParameters(checkpoint, into: model.store)
        try Checkpoint.loadBuffers(checkpoint, into: model)
        var inputs = [Int32](repeating: 0, count: B * T), targets = inputs
        var window = [Int32](repeating: 0, count: T + 1)
        for b in 0 ..< B {
            window.withUnsafeMutableBufferPointer { data.copyTokens(o + b * T ..< o + b * T + T + 1, into: $0.baseAddress!) }
            for t in 0 ..< T { inputs[b * T + t] = window[t]; targets[b * T + t] = window[t + 1] }
        }
        let scales = LossScales(ce: 1 / Double(B * T), aux: config.moe.auxLossCoef / Double(R), z: config.moe.zLossCoef / Double(R))
        model.store.zeroGrads()
        let r = model.step(inputs: inputs, targets: targets, B: B, T: T, scales: scales, applyCapacity: true, backward: true)
        let aux = r.routing.isEmpty ? 0 : r.routing.reduce(0) { $0 + $1.aux } / Double(R)
        let z = r.routing.isEmpty ? 0 : r.routing.reduce(0) { $0 + $1.z } / Double(R)
        let ce = r.ceSum / Double(B * T)
        let result = Result(loss: ce + config.moe.auxLossCoef * aux + config.moe.zLossCoef * z, ce: ce, aux: aux, z: z)
        try AtomicFile.write(to: out) { f in
            try f.setAttribute("loss", result.loss)
            try f.setAttribute("ce", result.ce)
            try f.setAttribute("aux", result.aux)
            try f.setAttribute("z", result.z)
            try f.setAttribute("checkpoint", checkpoint)
            try f.setAttribute("batch", Int64(B))
            try f.setAttribute("offset", Int64(o))
            for p in model.store.infos {
                try f.createDataset("grads/" + p.path,
                                    values: Array(UnsafeBufferPointer(start: model.store.grads + p.offset, count: p.count)),
                                    shape: p.shape)
            }
        }
        return result
    }
}

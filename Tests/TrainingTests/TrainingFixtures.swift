import Foundation
import Collectives
import Configuration
import DataPipeline
import Model
import Training

/// The tiny preset from jobs/configs, with overrides, resolved against the generated corpus.
func tinyRun(_ overrides: [String] = []) throws -> (RunConfig, TrainingData) {
    var c = try ConfigLoader.load(yamlPath: TestPathsTraining.repo + "/jobs/configs/tiny.yaml", overrides: overrides)
    let data = try TrainingData.open(c)
    c.model.vocabSize = data.vocabSize
    return (c, data)
}

enum TestPathsTraining {
    static var repo: String {
        var u = URL(fileURLWithPath: #filePath)
        for _ in 0 ..< 3 { u.deleteLastPathComponent() }
        return u.path
    }
}

/// The full parameters of a run gathered from its ranks: trunk from rank 0, expert rows from the first copy.
final class GatheredParameters: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var tensors: [String: [Float]] = [:]

    func add(_ store: ParameterStore, rank: Int, firstCopy: Bool) {
        lock.lock(); defer { lock.unlock() }
        for p in store.infos {
            if !p.isExpert && rank != 0 { continue }
            if p.isExpert && !firstCopy { continue }
            var full = tensors[p.path] ?? [Float](repeating: .nan, count: p.globalCount)
            let local = UnsafeBufferPointer(start: store.params + p.offset, count: p.count)
            let start = p.isExpert ? p.localRows.lowerBound * p.rowSize : 0
            for i in 0 ..< p.count { full[start + i] = local[i] }
            tensors[p.path] = full
        }
    }

    /// Largest |a − b| / (1 + |b|) over all tensors.
    func maxDifference(to other: GatheredParameters) -> Double {
        var worst = 0.0
        for (k, a) in tensors {
            guard let b = other.tensors[k], b.count == a.count else { return .infinity }
            for i in 0 ..< a.count { worst = max(worst, Double(abs(a[i] - b[i])) / (1 + Double(abs(b[i])))) }
        }
        return tensors.count == other.tensors.count ? worst : .infinity
    }
}

/// Trains `steps` steps of `config` on a world of `W` threads; returns rank 0's reports and the gathered parameters.
func trainInProcess(_ config: RunConfig, data: TrainingData, worldSize W: Int, steps: Int,
                    expertParallel: Int? = nil) throws -> ([StepReport], GatheredParameters) {
    let gathered = GatheredParameters()
    final class Box: @unchecked Sendable { var reports: [StepReport] = [] }
    let box = Box()
    try ThreadWorld.run(size: W) { world in
        var c = config
        c.train.microBatch = config.train.globalBatch / W
        c.parallel.expertParallel = expertParallel
        try validate(c, worldSize: W)
        let ctx = try ParallelContext.make(world: world, expertParallel: expertParallel ?? W, numExperts: c.moe.numExperts)
        let trainer = try Trainer(config: c, ctx: ctx, train: data.train)
        var reps: [StepReport] = []
        for _ in 0 ..< steps { reps.append(trainer.trainStep()) }
        gathered.add(trainer.model.store, rank: world.rank, firstCopy: world.rank < ctx.expertGroup.size)
        if world.rank == 0 { box.reports = reps }
    }
    return (box.reports, gathered)
}

// train.data_seed against train.seed: which of them moves the corpus, the loader and the initialisation
// (the replicates of `moe-dist sweep --vary` rely on it).
import XCTest
import Collectives
import Configuration
import Model
import Training

/// train.data_seed: the data order (and the generated corpus) follows it; train.seed alone no longer moves them.
final class DataSeedTests: XCTestCase {
    private func firstTokens(_ c: RunConfig) throws -> [Int32] {
        let data = try TrainingData.open(c)
        var out = [Int32](repeating: 0, count: 64)
        out.withUnsafeMutableBufferPointer { data.train.copyTokens(0 ..< 64, into: $0.baseAddress!) }
        return out
    }

    func testDataSeedKeysTheCorpusAndTheLoaderButNotTheInitSeed() throws {
        let (base, _) = try tinyRun()
        let (dataOnly, _) = try tinyRun(["train.data_seed=7"])
        let (initOnly, _) = try tinyRun(["train.seed=7", "train.data_seed=\(base.train.seed)"])
        XCTAssertEqual(try firstTokens(base), try firstTokens(initOnly), "an init-only replicate sees the same corpus")
        XCTAssertNotEqual(try firstTokens(base), try firstTokens(dataOnly))
        let ctx = try ParallelContext.make(world: SingleProcessCommunicator(), config: base)
        let data = try TrainingData.open(dataOnly)
        XCTAssertEqual(try Trainer(config: dataOnly, ctx: ctx, train: data.train).loader.state.seed, 7)
        let data2 = try TrainingData.open(initOnly)
        XCTAssertEqual(try Trainer(config: initOnly, ctx: ctx, train: data2.train).loader.state.seed, UInt64(base.train.seed))
        XCTAssertEqual(base.train.effectiveDataSeed, base.train.seed, "default: the data seed is train.seed")
    }
}

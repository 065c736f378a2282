// Process start-up shared by the commands that train or evaluate: BLAS threads,
// the MPI world, the resolved and validated configuration, and error reporting
// that ends every rank.
import Foundation
import ArgumentParser
import Collectives
import Configuration
import DataPipeline
import Kernels
import Model
import Training

enum Launch {
    /// Gives each rank cores / (ranks on this node) threads (OPENBLAS_NUM_THREADS when set), so ranks ×
    /// threads = cores; the rank splits its products over them itself and OpenBLAS runs one thread each.
    static func configureBLASThreads() {
        Blas.numThreads = LaunchEnvironment.current.blasThreads() ?? Blas.configuredThreads
    }

    /// Loads the configuration, fills in the vocabulary size from the data, fits the micro-batch to the
    /// world (BatchFit.swift: the line saying so is `batchNote`) and validates it for `worldSize`. The memory
    /// a rank needs is checked against what it may use (MemoryFit) before the data or the model is built:
    /// for the generated corpus before it is generated, for token files once their header gives the vocabulary.
    /// `ranksInProcess`: ranks sharing this process (--emulate-ranks); `command` names the command in errors.
    static func resolve(_ options: RunOptions, worldSize: Int, rank: Int = 0, ranksInProcess: Int = 1,
                        command: String = "train") throws -> (config: RunConfig, data: TrainingData, batchNote: String?) {
        var config = try options.load()
        let batchNote = try config.fitMicroBatch(worldSize: worldSize)
        if config.data.train == nil {
            var sized = config
            if sized.model.vocabSize == 0 { sized.model.vocabSize = GeneratedCorpus.defaultVocabSize }
            try validate(sized, worldSize: worldSize)
            try MemoryFit.check(sized, worldSize: worldSize, ranksInProcess: ranksInProcess, use: .training, command: command)
        }
        let data = try TrainingData.open(config, showProgress: rank == 0)
        if config.model.vocabSize != 0 && config.model.vocabSize != data.vocabSize && config.data.train != nil {
            throw UserError("model.vocab_size: \(config.model.vocabSize) disagrees with data.train's vocabulary (\(data.vocabSize))")
        }
        config.model.vocabSize = data.vocabSize
        try validate(config, worldSize: worldSize)
        if config.data.train != nil {
            try MemoryFit.check(config, worldSize: worldSize, ranksInProcess: ranksInProcess, use: .training, command: command)
        }
        return (config, data, batchNote)
    }

    /// Runs `body` on every rank of the world: MPI (or a world of one without mpirun), or N threads in this
    /// process with `emulateRanks`. An error on any rank ends the whole job with a message naming the rank.
    /// From here a rank that stops or hangs ends an mpirun job after `timeout` seconds
    /// (parallel.collective_timeout; 0 = wait for ever): train, eval and bench all watch their collectives.
    static func watchCollectives(_ world: Communicator, timeout: Double) {
        if let w = world as? MPICommunicator, w.size > 1 { CollectiveWatchdog.shared.start(world: w, timeout: timeout) }
    }

    static func onEveryRank(emulateRanks: Int?, _ body: @escaping (Communicator) throws -> Void) throws {
        configureBLASThreads()
        try checkExpertProducts()
        if let n = emulateRanks {
            guard n >= 1 else { throw UserError("--emulate-ranks: must be at least 1, got \(n)") }
            try ThreadWorld.run(size: n) { comm in try body(comm) }
            return
        }
        let world = MPICommunicator.world()
        do {
            try body(world)
        } catch let e as ExitCode {
            throw e          // an agreed stop (e.g. preemption): every rank exits with the same status
        } catch let agreed as AgreedError {
            // Every rank failed the same way (a configuration error): one message, from rank 0, and a clean end
            // (MPI_Finalize on every rank, then the error's status), not MPI_Abort's banner.
            if world.rank == 0 { printError("\(agreed.error)") }
            MPI.finalize()
            throw ExitCode(exitStatus(agreed.error))
        } catch {
            if world.size > 1 { world.abort(code: exitStatus(error), message: "\(error)") }
            throw error
        }
    }

    /// Runs `body`, which must use no collective operation, on every rank, then agrees on how it went: when every
    /// rank failed (they read the same configuration, so a configuration error is everyone's), each throws an
    /// `AgreedError` that `onEveryRank` ends cleanly; when only some failed, they throw their error and the others
    /// a failure naming how many ranks failed, which ends the job as any rank's failure does.
    static func agreeing<T>(_ world: Communicator, _ body: () throws -> T) throws -> T {
        let result = Result { try body() }
        guard world.size > 1 else { return try result.get() }
        var failed: [Double] = [0]
        if case .failure = result { failed[0] = 1 }
        failed.withUnsafeMutableBufferPointer { world.allReduceSum($0) }
        switch result {
        case .success(let value):
            if failed[0] > 0 { throw UserError("\(Int(failed[0])) other rank(s) failed to set up (their message says why)", status: ExitStatus.failure) }
            return value
        case .failure(let error):
            if Int(failed[0]) == world.size { throw AgreedError(error: error) }
            throw error
        }
    }

    /// `resolve`, agreed over the ranks of `world` (a configuration error ends every rank cleanly, said once).
    static func resolve(_ options: RunOptions, world: Communicator, ranksInProcess: Int = 1,
                        command: String = "train") throws -> (config: RunConfig, data: TrainingData, batchNote: String?) {
        try agreeing(world) {
            try resolve(options, worldSize: world.size, rank: world.rank, ranksInProcess: ranksInProcess, command: command)
        }
    }

    /// The exit status of an error (docs/exit-status.md): 2 usage or configuration, 3 bad data, 1 anything else.
    static func exitStatus(_ error: Error) -> Int32 {
        if let a = error as? AgreedError { return exitStatus(a.error) }
        if let u = error as? UserError { return u.status }
        if error is ConfigError || error is RunDirectoryInUseError || error is RunDirectoryNotSharedError { return ExitStatus.usage }
        if error is DataError || error is DataFileError || error is MetricsHistoryError || error is CheckpointMissingError {
            return ExitStatus.badData
        }
        return ExitStatus.failure
    }
}

/// An error that every rank raised at the same point (`Launch.agreeing`); it reads as the error itself.
struct AgreedError: Error, CustomStringConvertible {
    let error: Error
    var description: String { "\(error)" }
}

/// Prints `moe-dist: message` on standard error.
func printError(_ message: String) {
    FileHandle.standardError.write("moe-dist: \(message)\n".data(using: .utf8)!)
}

/// Runs a command body, turning thrown errors into one line on standard error and an exit status.
func failingCleanly(_ body: () throws -> Void) throws {
    do { try body() } catch let e as ExitCode { throw e } catch let e as CleanExit { throw e } catch {
        printError("\(error)")
        throw ExitCode(Launch.exitStatus(error))
    }
}

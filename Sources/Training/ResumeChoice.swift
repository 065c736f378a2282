// Where a run starts: the checkpoint `--resume auto` continues from, and the check that a fresh run
// does not mix with an earlier run's files. Rank 0 looks at the run directory and every rank gets
// its answer, so every rank must call these at the same point (they are collectives).
import Collectives

public enum ResumeChoice {
    /// The newest intact checkpoint of `runDirectory`, skipping damaged ones (each reported through `warn`).
    public static func newestIntactCheckpoint(runDirectory: String, warn: (String) -> Void) -> String? {
        for path in Checkpoint.list(runDirectory: runDirectory) {
            do { try Checkpoint.verify(path); return path } catch { warn("skipping damaged checkpoint \(path): \(error)") }
        }
        return nil
    }

    /// `--resume auto`: the newest intact checkpoint of `runDirectory`, chosen (and verified) once by rank 0,
    /// the same path on every rank; nil when there is none (a fresh start). Damaged ones are reported
    /// through `warn` on rank 0.
    public static func newest(runDirectory: String, world: Communicator, warn: (String) -> Void) throws -> String? {
        var chosenStep = [-1.0]
        if world.rank == 0, let path = newestIntactCheckpoint(runDirectory: runDirectory, warn: warn) {
            chosenStep[0] = Double(try Checkpoint.readState(path).counters.step)
        }
        chosenStep.withUnsafeMutableBufferPointer { world.allReduceMax($0) }
        return chosenStep[0] >= 0 ? Checkpoint.path(runDirectory: runDirectory, step: Int(chosenStep[0])) : nil
    }

    /// A fresh run: whether `runDirectory` already holds an earlier run's checkpoints (rank 0 looks; agreed).
    public static func holdsCheckpoints(runDirectory: String, world: Communicator) -> Bool {
        world.anyRank(world.rank == 0 && !Checkpoint.list(runDirectory: runDirectory).isEmpty)
    }
}

// Where this process sits on its node, read from the launcher's environment
// before (or without) MPI: the CLI divides the node's cores among the ranks
// that share it when it sets each rank's threads.
import Foundation

public struct LaunchEnvironment: Equatable, Sendable {
    /// This process's index among the ranks on its node (0 without a launcher).
    public var localRank: Int
    /// Number of ranks on this node (1 without a launcher).
    public var localSize: Int
    /// `OPENBLAS_NUM_THREADS` when set to a positive integer: the user's choice wins.
    public var blasThreadsOverride: Int?
    /// The variables the values came from, e.g. "OMPI_COMM_WORLD_LOCAL_RANK/OMPI_COMM_WORLD_LOCAL_SIZE",
    /// or nil when none was set.
    public var source: String?

    /// Reads, in order of preference: OpenMPI's `OMPI_COMM_WORLD_LOCAL_RANK` /
    /// `OMPI_COMM_WORLD_LOCAL_SIZE`; MPICH (Hydra) `MPI_LOCALRANKID` /
    /// `MPI_LOCALNRANKS`; Slurm's `SLURM_LOCALID` / `SLURM_NTASKS_PER_NODE`
    /// (or the first count of `SLURM_TASKS_PER_NODE`, e.g. "4(x2)"). A pair
    /// that is missing or malformed is skipped.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        localRank = 0
        localSize = 1
        source = nil
        let pairs = [("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
                     ("MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
                     ("SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
                     ("SLURM_LOCALID", "SLURM_TASKS_PER_NODE")]
        for (rankKey, sizeKey) in pairs {
            guard let r = environment[rankKey].flatMap(Self.leadingInt),
                  let s = environment[sizeKey].flatMap(Self.leadingInt),
                  s >= 1, r >= 0, r < s else { continue }
            localRank = r
            localSize = s
            source = "\(rankKey)/\(sizeKey)"
            break
        }
        blasThreadsOverride = environment["OPENBLAS_NUM_THREADS"].flatMap { Int($0.trimmingCharacters(in: .whitespaces)) }
            .flatMap { $0 >= 1 ? $0 : nil }
    }

    /// The environment of this process.
    public static var current: LaunchEnvironment { LaunchEnvironment() }

    /// Threads for each rank of this process: nil when `OPENBLAS_NUM_THREADS`
    /// is set (the caller then takes the count OpenBLAS read from it), else
    /// `max(1, cores / (localSize * ranksPerProcess))`. `ranksPerProcess` is
    /// the number of ThreadWorld ranks (`--emulate-ranks N`) sharing the process.
    public func blasThreads(cores: Int = ProcessInfo.processInfo.activeProcessorCount, ranksPerProcess: Int = 1) -> Int? {
        if blasThreadsOverride != nil { return nil }
        return Swift.max(1, cores / (localSize * Swift.max(1, ranksPerProcess)))
    }

    /// The integer at the start of `text` ("4", "4(x2)", "4,2(x3)"), or nil.
    static func leadingInt(_ text: String) -> Int? {
        let digits = text.trimmingCharacters(in: .whitespaces).prefix { $0.isASCII && $0.isNumber }
        return digits.isEmpty ? nil : Int(digits)
    }
}

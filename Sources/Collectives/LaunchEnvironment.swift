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
    /// `MPI_LOCALNRANKS`; Slurm's `SLURM_LOCALID` / `SLURM_NTASKS_PER_NODE`, or
    /// this node's count in `SLURM_STEP_TASKS_PER_NODE` (else `SLURM_TASKS_PER_NODE`),
    /// e.g. "2(x3),1" with `SLURM_STEP_NODEID` (else `SLURM_NODEID`) 3 -> 1: nodes of
    /// one job may run different numbers of tasks. A pair that is missing or
    /// malformed is skipped.
    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        localRank = 0
        localSize = 1
        source = nil
        var environment = environment
        let nodeKey = environment["SLURM_STEP_NODEID"] != nil ? "SLURM_STEP_NODEID" : "SLURM_NODEID"
        for listKey in ["SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"] {
            if let list = environment[listKey] {
                // The count of this node, or (without a node index) of the first node.
                let node = environment[nodeKey].flatMap(Self.leadingInt) ?? 0
                environment[listKey] = Self.tasksOnNode(node, list).map(String.init) ?? ""
            }
        }
        let pairs = [("OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"),
                     ("MPI_LOCALRANKID", "MPI_LOCALNRANKS"),
                     ("SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"),
                     ("SLURM_LOCALID", "SLURM_STEP_TASKS_PER_NODE"),
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

    /// The task count of node `node` in Slurm's compressed list ("2(x3),1": nodes 0-2 run 2, node 3 runs 1),
    /// or nil when the list is malformed or shorter.
    public static func tasksOnNode(_ node: Int, _ list: String) -> Int? {
        var first = 0
        for item in list.split(separator: ",") {
            let parts = item.split(separator: "(")
            guard let count = Int(parts[0].trimmingCharacters(in: .whitespaces)) else { return nil }
            var repeats = 1
            if parts.count == 2 {
                let r = parts[1].trimmingCharacters(in: .whitespaces)
                guard r.hasPrefix("x"), r.hasSuffix(")"), let n = Int(r.dropFirst().dropLast()), n >= 1 else { return nil }
                repeats = n
            } else if parts.count > 2 { return nil }
            if node < first + repeats { return count }
            first += repeats
        }
        return nil
    }

    /// The integer at the start of `text` ("4", "4(x2)", "4,2(x3)"), or nil.
    static func leadingInt(_ text: String) -> Int? {
        let digits = text.trimmingCharacters(in: .whitespaces).prefix { $0.isASCII && $0.isNumber }
        return digits.isEmpty ? nil : Int(digits)
    }
}

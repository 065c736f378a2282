// How much memory one rank may use, read from the node before anything large is allocated: the
// kernel's MemAvailable, the memory cgroup's limit (a container or a Slurm job's cgroup), and Slurm's
// allocation (SLURM_MEM_PER_NODE, SLURM_MEM_PER_CPU), whichever is least. The node's share is divided
// among the ranks that share the node (LaunchEnvironment).
import Foundation

public struct AvailableMemory: Equatable, Sendable {
    /// Bytes this rank may use.
    public var bytes: Int
    /// Where the figure comes from, for messages ("MemAvailable 23.3 GB / 2 ranks on this node").
    public var source: String

    /// The least of the limits that apply to one rank, or nil when none can be read (then nothing is checked).
    /// `root` prefixes the /proc and /sys paths (tests point it at a fake tree).
    public static func perRank(environment: [String: String] = ProcessInfo.processInfo.environment,
                               launch: LaunchEnvironment? = nil, root: String = "") -> AvailableMemory? {
        let ranks = (launch ?? LaunchEnvironment(environment: environment)).localSize
        var candidates: [AvailableMemory] = []
        func perRank(_ nodeBytes: Int, _ what: String) -> AvailableMemory {
            ranks > 1 ? AvailableMemory(bytes: nodeBytes / ranks, source: "\(what) / \(ranks) ranks on this node")
                : AvailableMemory(bytes: nodeBytes, source: what)
        }
        if let kb = meminfo(root + "/proc/meminfo", key: "MemAvailable") {
            candidates.append(perRank(kb * 1024, "MemAvailable \(gigabytes(kb * 1024)) (/proc/meminfo)"))
        }
        if let c = cgroupRemaining(root: root) { candidates.append(perRank(c.bytes, c.source)) }
        // Slurm gives megabytes: per node (shared by the node's tasks), or per CPU (each task's CPUs).
        if let mb = environment["SLURM_MEM_PER_NODE"].flatMap(megabytes) {
            candidates.append(perRank(mb << 20, "SLURM_MEM_PER_NODE=\(mb)M"))
        } else if let mb = environment["SLURM_MEM_PER_CPU"].flatMap(megabytes) {
            let cpus = environment["SLURM_CPUS_PER_TASK"].flatMap { Int($0) }.map { max($0, 1) } ?? 1
            candidates.append(AvailableMemory(bytes: (mb << 20) * cpus,
                                              source: "SLURM_MEM_PER_CPU=\(mb)M × \(cpus) CPU(s) per task"))
        }
        return candidates.min { $0.bytes < $1.bytes }
    }

    /// "23.3 GB" (decimal, as `estimate` prints).
    public static func gigabytes(_ bytes: Int) -> String {
        Double(bytes) >= 1e9 ? String(format: "%.1f GB", Double(bytes) / 1e9) : String(format: "%.0f MB", Double(bytes) / 1e6)
    }

    /// A Slurm memory value in megabytes ("4000", "4000M", "4G"; Slurm's default unit is M).
    static func megabytes(_ text: String) -> Int? {
        let t = text.trimmingCharacters(in: .whitespaces).uppercased()
        let digits = t.prefix { $0.isNumber }
        guard let n = Int(digits), n > 0 else { return nil }
        switch t.dropFirst(digits.count) {
        case "", "M": return n
        case "G": return n << 10
        case "T": return n << 20
        case "K": return max(n >> 10, 1)
        default: return nil
        }
    }

    /// The value in kB of `key` in a /proc/meminfo-style file.
    static func meminfo(_ path: String, key: String) -> Int? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
            return Int(line.dropFirst(key.count + 1).split(separator: " ").first ?? "")
        }
        return nil
    }

    /// Limit minus usage of this process's memory cgroup (v2 memory.max / memory.current, or v1
    /// memory.limit_in_bytes / memory.usage_in_bytes), nil when unlimited or unreadable.
    static func cgroupRemaining(root: String) -> AvailableMemory? {
        guard let membership = try? String(contentsOfFile: root + "/proc/self/cgroup", encoding: .utf8) else { return nil }
        func number(_ path: String) -> Int? {
            (try? String(contentsOfFile: path, encoding: .utf8)).flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }
        for line in membership.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3 else { continue }
            let path = parts[2] == "/" ? "" : String(parts[2])
            let files: [(String, String, String)]
            if parts[0] == "0" && parts[1].isEmpty {
                files = [(root + "/sys/fs/cgroup" + path, "memory.max", "memory.current")]
            } else if parts[1].split(separator: ",").contains("memory") {
                files = [(root + "/sys/fs/cgroup/memory" + path, "memory.limit_in_bytes", "memory.usage_in_bytes"),
                         (root + "/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes")]
            } else { continue }
            for (dir, limitFile, usageFile) in files {
                guard let limit = number(dir + "/" + limitFile) else { continue }   // "max" (v2 unlimited) reads as nil
                if limit >= 1 << 60 { break }                                       // v1 unlimited
                let used = number(dir + "/" + usageFile) ?? 0
                return AvailableMemory(bytes: max(limit - used, 0),
                                       source: "memory cgroup limit \(gigabytes(limit)), \(gigabytes(used)) in use (\(dir))")
            }
        }
        return nil
    }
}

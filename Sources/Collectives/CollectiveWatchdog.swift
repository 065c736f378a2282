// The collective watchdog (parallel.collective_timeout): a rank that stops (SIGSTOP, a hung
// node, a livelock) leaves every other rank waiting in its next collective, for ever, burning
// the allocation. MPICommunicator marks each MPI call's start and end here (two stores under a
// lock: the blocking calls and their algorithms stay exactly as they were); a thread that
// sleeps between looks ends this process with status 1 when one call has lasted longer than
// the timeout, and mpirun (or srun) then ends the others.
//
// Naming the rank that did not arrive: a rank that has waited in a call for a moment writes
// `<directory>/rank-<R>` (the communicator, the call's number on it, its host). At the timeout
// a waiting rank reads its peers' notes: a member of the communicator with no note for the same
// call never reached it. The directory is the run directory's `.collectives` (it must be shared
// by all hosts, as checkpoints already need). Nothing is written while calls finish quickly.
import Foundation

public final class CollectiveWatchdog: @unchecked Sendable {
    /// The process's watchdog (one rank per process under MPI).
    public static let shared = CollectiveWatchdog()
    init() {}

    /// A communicator as the watchdog names it: a label equal on all its ranks ("world",
    /// "world/split(color 1)") and its members' world ranks.
    final class Identity: @unchecked Sendable {
        let label: String
        let worldRanks: [Int]
        var calls = 0       // calls made on it so far (the main thread's; same on every member)
        init(label: String, worldRanks: [Int]) { self.label = label; self.worldRanks = worldRanks }
    }

    private let lock = NSLock()
    // The call in progress, set by the thread calling MPI and read by the watchdog thread.
    private var active = false
    private var op: StaticString = ""
    private var comm: Identity? = nil
    private var seq = 0
    private var since = 0.0
    // Set once by `start`.
    private var timeout = 0.0
    private var directory: String? = nil
    private var hosts: [String] = []
    private var job = ""
    private var worldRank = 0
    private var running = false

    /// Seconds on the monotonic clock.
    static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    // MARK: called around every MPI call (MPICommunicator)

    @inline(__always) func enter(_ what: StaticString, _ identity: Identity) {
        identity.calls += 1
        if !running { return }
        let t = CollectiveWatchdog.now()
        lock.lock()
        active = true; op = what; comm = identity; seq = identity.calls; since = t
        lock.unlock()
    }

    @inline(__always) func leave() {
        if !running { return }
        lock.lock()
        active = false
        lock.unlock()
    }

    // MARK: start

    /// Starts watching this process's MPI calls: after `timeout` seconds in one call the process
    /// prints who did not arrive and exits with status 1. `timeout` 0 watches nothing. Collective
    /// over `world` (the ranks exchange their host names); every rank calls it once, before training.
    /// Until `noteIn` names a directory, the message cannot tell which rank is missing and lists the candidates.
    public func start(world: MPICommunicator, timeout: Double) {
        precondition(timeout >= 0 && timeout.isFinite, "collective timeout must be >= 0")
        var host = ProcessInfo.processInfo.hostName
        if let dot = host.firstIndex(of: "."), !host.hasPrefix(".") { host = String(host[..<dot]) }
        // Notes carry rank 0's host, pid and start time, so that an earlier job's notes never count.
        let names = world.allGatherStrings(host + "\t\(getpid()):\(Int(Date().timeIntervalSince1970 * 1000))", width: 96)
        arm(timeout: timeout, hosts: names.map { String($0.prefix { $0 != "\t" }) },
            job: names.first.map { $0.replacingOccurrences(of: "\t", with: ":") } ?? "", worldRank: world.rank)
    }

    /// `start` after the host exchange: `hosts` by world rank, `job` the same string on every rank.
    func arm(timeout: Double, hosts: [String], job: String, worldRank: Int) {
        lock.lock()
        self.hosts = hosts
        self.job = job
        self.worldRank = worldRank
        self.timeout = timeout
        lock.unlock()
        guard timeout > 0, !running else { return }
        running = true
        let thread = Thread { [self] in watch() }
        thread.name = "collective watchdog"
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// The directory, shared by every rank, where a waiting rank leaves its note (created if missing).
    /// Not collective; call it once nothing remains to check before the run writes into its directory.
    public func noteIn(_ dir: String) {
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        lock.lock()
        directory = dir
        lock.unlock()
    }

    /// `timeout` in the words of the messages: "600 s", "2.5 s".
    static func seconds(_ t: Double) -> String {
        t == t.rounded() ? "\(Int(t)) s" : "\(t) s"
    }

    static func notePath(_ dir: String, _ rank: Int) -> String { "\(dir)/rank-\(rank)" }

    // MARK: the watching thread

    private func watch() {
        // Look often enough that the timeout fires within a second of its time, rarely enough to cost nothing.
        let poll = min(1.0, max(0.05, timeout / 20))
        // A rank notes the call it waits in after this long: calls of a healthy step finish well before.
        let noteAfter = min(1.0, timeout / 4)
        var noted: (Identity, Int)? = nil
        var last = CollectiveWatchdog.now(), resumed = 0.0
        while true {
            Thread.sleep(forTimeInterval: poll)
            let wake = CollectiveWatchdog.now()
            // Much longer than a poll since the last look: this process itself was stopped (SIGSTOP, a
            // frozen node). Its peers did not wait for it meanwhile; they time out and name it. Its own
            // wait counts from now, so that it does not blame them when it is continued.
            if wake - last > poll + 2 { resumed = wake }
            last = wake
            lock.lock()
            let (isActive, what, identity, n, t0) = (active, op, comm, seq, since)
            lock.unlock()
            guard isActive, let identity else { continue }
            let waited = wake - max(t0, resumed)
            if waited >= noteAfter, noted.map({ $0.0 !== identity || $0.1 != n }) ?? true {
                writeNote(identity, n, what)
                noted = (identity, n)
            }
            // A peer that reached the call has noted it noteAfter + poll after it came: one without a note
            // came later than timeout - noteAfter - poll after us, or never.
            if waited >= timeout { fail(identity, n, what, waited: waited) }
        }
    }

    func writeNote(_ identity: Identity, _ n: Int, _ what: StaticString) {
        lock.lock()
        let dir = directory
        lock.unlock()
        guard let dir else { return }
        let text = "job=\(job)\ncomm=\(identity.label)\nseq=\(n)\nop=\(what)\nhost=\(host(worldRank))\n"
        let path = CollectiveWatchdog.notePath(dir, worldRank), tmp = path + ".tmp"
        if FileManager.default.createFile(atPath: tmp, contents: Data(text.utf8)) { rename(tmp, path) }
    }

    private func host(_ rank: Int) -> String { hosts.indices.contains(rank) ? hosts[rank] : "?" }

    /// Which members of `identity` have a note saying they wait in call `n` (nil: no directory to look in).
    func arrived(_ identity: Identity, _ n: Int) -> Set<Int>? {
        lock.lock()
        let dir = directory
        lock.unlock()
        guard let dir else { return nil }
        var found = Set<Int>()
        for r in identity.worldRanks {
            guard let text = try? String(contentsOfFile: CollectiveWatchdog.notePath(dir, r), encoding: .utf8) else { continue }
            let lines = Set(text.split(separator: "\n").map(String.init))
            if lines.contains("job=\(job)") && lines.contains("comm=\(identity.label)") && lines.contains("seq=\(n)") { found.insert(r) }
        }
        return found
    }

    private func fail(_ identity: Identity, _ n: Int, _ what: StaticString, waited: Double) -> Never {
        let message = timeoutMessage(identity, n, "\(what)", waited: waited)
        fflush(stdout)
        FileHandle.standardError.write(Data(message.utf8))
        // Not exit(): the main thread is inside MPI; at-exit handlers (MPI_Finalize) must not run.
        _exit(1)
    }

    /// The line printed when call `n` (`what`) on `identity` has waited `waited` seconds.
    func timeoutMessage(_ identity: Identity, _ n: Int, _ what: String, waited: Double) -> String {
        let members = identity.worldRanks
        let here = arrived(identity, n).map { $0.union([worldRank]) }
        let missing = members.filter { !(here?.contains($0) ?? ($0 == worldRank)) }
        func names(_ ranks: [Int]) -> String {
            (ranks.count == 1 ? "rank " : "ranks ") + ranks.map { "\($0) (host \(host($0)))" }.joined(separator: ", ")
        }
        let waiting = members.filter { here?.contains($0) ?? ($0 == worldRank) }
        let who: String
        if here == nil {
            who = "one of " + names(missing) + " did not arrive (no run directory to compare notes in)"
        } else if missing.isEmpty {
            who = "every rank of it is waiting in it (ranks \(members.map(String.init).joined(separator: ", "))): "
                + "MPI itself made no progress"
        } else {
            who = names(missing) + " did not arrive; " + (waiting.count == 1 ? "rank " : "ranks ") + waiting.map(String.init).joined(separator: ", ") + " waited in it"
        }
        let message = "moe-dist: rank \(worldRank) (host \(host(worldRank))): collective timeout: \(what) "
            + "(call \(n) on communicator \(identity.label)) has not finished after "
            + "\(String(format: "%.1f", waited)) s (parallel.collective_timeout = \(CollectiveWatchdog.seconds(timeout))): "
            + who + ". Ending the job; the last published checkpoint is kept.\n"
        return message
    }
}

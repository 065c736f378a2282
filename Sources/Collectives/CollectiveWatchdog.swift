// The collective watchdog (parallel.collective_timeout): a rank that stops (SIGSTOP, a hung
// node, a livelock) leaves every other rank waiting in its next collective, for ever, burning
// the allocation. MPICommunicator marks each MPI call's start and end here (two stores under a
// lock: the blocking calls and their algorithms stay exactly as they were); a thread that
// sleeps between looks ends this process with status 1 when one call has lasted longer than
// the timeout, and mpirun (or srun) then ends the others.
//
// Naming the rank that did not arrive: a rank that has waited in a call for a moment writes
// `<directory>/rank-<R>` (the communicator, the call's number on it, its host) and rewrites it
// with a new beat at every look while it waits; it removes the note when the call ends. At the
// timeout a waiting rank reads the notes twice, two looks apart: a member of the communicator
// whose note did not change is not waiting alive in a collective (stopped, hung, or stuck outside
// MPI). Ranks need not be in the same call: an all-to-all can finish on a rank that got all its
// data while a peer still waits for the stopped rank's. The directory is the run directory's
// `.collectives` (it must be shared by all hosts, as checkpoints already need). Nothing is
// written while calls finish quickly.
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
    private var notePath: String? = nil     // this rank's note, once `noteIn` names a directory
    private var noted = false               // the note describes the call in progress
    private var beats = 0
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
        if noted { noted = false; if let path = notePath { unlink(path) } }   // only after a long wait
        lock.unlock()
    }

    /// Tests: mark the last `enter` as in progress (without a running thread `enter` records nothing), or end it.
    func markActiveForTest(_ identity: Identity) {
        lock.lock(); active = true; comm = identity; seq = identity.calls; lock.unlock()
    }
    func leaveForTest() {
        lock.lock(); active = false; if noted { noted = false; if let path = notePath { unlink(path) } }; lock.unlock()
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
        notePath = CollectiveWatchdog.notePath(dir, worldRank)
        unlink(notePath!)   // an earlier job's
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
            if waited >= noteAfter { beat(identity, n, what) }
            guard waited >= timeout else { continue }
            // Who is alive: a waiting rank beats its note every poll, so a note that changed (or came or
            // went) over two polls belongs to a live rank; one that did not, or none, to a stopped one.
            let first = readNotes()
            let end = CollectiveWatchdog.now() + 2 * poll + 0.3
            var still = true
            while still && CollectiveWatchdog.now() < end {
                Thread.sleep(forTimeInterval: poll / 2)
                still = beat(identity, n, what)
            }
            last = CollectiveWatchdog.now()
            guard still else { continue }
            let alive = first.flatMap { a in readNotes().map { CollectiveWatchdog.living(a, $0) } }
            fail(identity, n, what, waited: CollectiveWatchdog.now() - max(t0, resumed), alive: alive)
        }
    }

    /// Writes (or rewrites, with the next beat) this rank's note while it is still in call `n` on
    /// `identity`; false when it has left it. Under the lock, so `leave` removes any note written.
    @discardableResult
    func beat(_ identity: Identity, _ n: Int, _ what: StaticString) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard active, comm === identity, seq == n else { return false }
        guard let path = notePath else { return true }
        beats += 1
        let text = "job=\(job)\ncomm=\(identity.label)\nseq=\(n)\nop=\(what)\nhost=\(host(worldRank))\nbeat=\(beats)\n"
        let tmp = path + ".tmp"
        if FileManager.default.createFile(atPath: tmp, contents: Data(text.utf8)) { rename(tmp, path) }
        noted = true
        return true
    }

    private func host(_ rank: Int) -> String { hosts.indices.contains(rank) ? hosts[rank] : "?" }

    /// The notes of this job, by world rank (nil: no directory to look in).
    func readNotes() -> [Int: String]? {
        lock.lock()
        let dir = directory
        lock.unlock()
        guard let dir else { return nil }
        var notes: [Int: String] = [:]
        for r in hosts.indices {
            guard let text = try? String(contentsOfFile: CollectiveWatchdog.notePath(dir, r), encoding: .utf8),
                  text.split(separator: "\n").contains(Substring("job=\(job)")) else { continue }
            notes[r] = text
        }
        return notes
    }

    /// The ranks whose note changed between two readings: written, rewritten with a new beat, or
    /// removed (the rank left its call). A note unchanged, or none at either reading: no sign of life.
    static func living(_ first: [Int: String], _ second: [Int: String]) -> Set<Int> {
        Set(Set(first.keys).union(second.keys).filter { first[$0] != second[$0] })
    }

    private func fail(_ identity: Identity, _ n: Int, _ what: StaticString, waited: Double, alive: Set<Int>?) -> Never {
        let message = timeoutMessage(identity, n, "\(what)", waited: waited, alive: alive)
        fflush(stdout)
        FileHandle.standardError.write(Data(message.utf8))
        // Not exit(): the main thread is inside MPI; at-exit handlers (MPI_Finalize) must not run.
        _exit(1)
    }

    /// The line printed when call `n` (`what`) on `identity` has waited `waited` seconds.
    func timeoutMessage(_ identity: Identity, _ n: Int, _ what: String, waited: Double, alive: Set<Int>?) -> String {
        func names(_ ranks: [Int]) -> String {
            (ranks.count == 1 ? "rank " : "ranks ") + ranks.map { "\($0) (host \(host($0)))" }.joined(separator: ", ")
        }
        let others = identity.worldRanks.filter { $0 != worldRank }
        let who: String
        if let alive {
            let missing = others.filter { !alive.contains($0) }
            let silentElsewhere = hosts.indices.filter { $0 != worldRank && !alive.contains($0) && !identity.worldRanks.contains($0) }
            if !missing.isEmpty {
                let waiting = identity.worldRanks.filter { $0 == worldRank || alive.contains($0) }
                who = names(missing) + " did not arrive; " + (waiting.count == 1 ? "rank " : "ranks ")
                    + waiting.map(String.init).joined(separator: ", ") + " waited in collectives"
            } else if !silentElsewhere.isEmpty {
                who = "every rank of it waits in a collective; no sign of life from " + names(silentElsewhere)
            } else {
                who = "every rank of the job waits in a collective: MPI itself made no progress"
            }
        } else {
            who = "one of " + names(others) + " did not arrive (no run directory to compare notes in)"
        }
        return "moe-dist: rank \(worldRank) (host \(host(worldRank))): collective timeout: \(what) "
            + "(call \(n) on communicator \(identity.label)) has not finished after "
            + "\(String(format: "%.1f", waited)) s (parallel.collective_timeout = \(CollectiveWatchdog.seconds(timeout))): "
            + who + ". Ending the job; the last published checkpoint is kept.\n"
    }
}

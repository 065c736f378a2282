// The lock on a run directory: one live `train` per directory, on one host or on several that share
// the file system (docs/file-formats.md, "Run-directory lock").
//
// RUN_DIR/.moe-dist.lock is created with O_CREAT | O_EXCL (atomic on local file systems and NFSv3+,
// where flock may not be) and holds the holder's host, pid, boot id, process start time and a random
// token. While the run lives, a thread refreshes the file's modification time every `heartbeat` seconds
// (through the open descriptor, so an NFS server stamps its own time). A lock is stale when
//   - its host is this host (same boot) and its pid is gone or now names another process (start time), or
//     the host has rebooted since (boot id); or
//   - its heartbeat is older than `staleAfter` seconds (a holder on another host that died or lost the
//     file system; clocks are assumed to agree to well within that bound, as NTP keeps them).
// A stale lock is taken over: renamed to a private name (only one of several contenders can move it),
// checked to still be the lock judged stale (else put back with link, which never overwrites), removed,
// and the O_EXCL creation retried. Only rank 0 takes the lock; it is removed when the run ends, whatever
// the exit status; after kill -9 the next `train --resume auto` finds it stale and takes it over.
import Foundation

/// A run directory held by a live run (exit status 2: a usage error, choose another directory or wait).
public struct RunDirectoryInUseError: Error, CustomStringConvertible {
    public var description: String
}

public final class RunDirectoryLock {
    public static let fileName = ".moe-dist.lock"
    /// Seconds between heartbeats.
    public static let heartbeat = 10.0
    /// A lock whose heartbeat is older than this (seconds) is stale: MOE_DIST_LOCK_STALE_SECONDS, default 120.
    public static var staleAfter: Double {
        ProcessInfo.processInfo.environment["MOE_DIST_LOCK_STALE_SECONDS"].flatMap(Double.init).map { max($0, 1) } ?? 120
    }

    public let path: String
    private let directory: String
    private let createdDirectory: Bool
    private let token: String
    private var fd: Int32
    private var timer: DispatchSourceTimer?

    /// What a lock file says about its holder.
    public struct Holder: Equatable {
        public var host = "", pid: Int32 = 0, bootID = "", processStart = "", started = "", token = ""

        init(text: String) {
            for line in text.split(separator: "\n") {
                let kv = line.split(separator: " ", maxSplits: 1).map(String.init)
                guard kv.count == 2 else { continue }
                switch kv[0] {
                case "host": host = kv[1]
                case "pid": pid = Int32(kv[1]) ?? 0
                case "boot_id": bootID = kv[1]
                case "process_start": processStart = kv[1]
                case "started": started = kv[1]
                case "token": token = kv[1]
                default: break
                }
            }
        }
        init(host: String, pid: Int32, bootID: String, processStart: String, started: String, token: String) {
            self.host = host; self.pid = pid; self.bootID = bootID; self.processStart = processStart
            self.started = started; self.token = token
        }
        var text: String {
            "moe-dist run-directory lock\nhost \(host)\npid \(pid)\nboot_id \(bootID)\nprocess_start \(processStart)\n"
                + "started \(started)\ntoken \(token)\n"
        }
    }

    /// Creates `runDirectory` if needed and takes its lock, taking over a stale one (reported through `warn`).
    /// Throws RunDirectoryInUseError when a live run holds it, SystemError when the directory or the lock
    /// file cannot be created.
    /// `waitForOtherHosts` (train --resume auto, e.g. a Slurm job requeued on another node after its node
    /// died): a lock of another host whose heartbeat is not yet stale is watched until it is (then taken
    /// over) or until its heartbeat moves (a live run: refused), instead of being refused at once.
    public static func acquire(runDirectory: String, waitForOtherHosts: Bool = false,
                               warn: (String) -> Void) throws -> RunDirectoryLock {
        let created = try makeDirectories(runDirectory)
        let path = runDirectory + "/" + fileName
        let me = Holder(host: hostName(), pid: getpid(), bootID: bootID(), processStart: processStart(getpid()) ?? "",
                        started: ISO8601DateFormatter().string(from: Date()), token: randomToken())
        for _ in 0 ..< 8 {
            let fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o644)
            if fd >= 0 {
                let bytes = Array(me.text.utf8)
                let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
                guard written == bytes.count, fsync(fd) == 0 || errno == EINVAL else {
                    let e = SystemError("cannot write the run-directory lock \(path)")
                    close(fd); unlink(path)
                    throw e
                }
                return RunDirectoryLock(path: path, directory: runDirectory, created: created, token: me.token, fd: fd)
            }
            guard errno == EEXIST else { throw SystemError("cannot create the run-directory lock \(path)") }
            guard var (holder, age) = read(path) else { continue }      // removed meanwhile: try again
            if waitForOtherHosts && holder.host != hostName() && staleness(holder, heartbeatAge: age) == nil {
                warn("\(runDirectory) is locked by host \(holder.host), pid \(holder.pid) (heartbeat "
                     + String(format: "%.0f s ago); waiting up to %.0f s for it to go stale", age, staleAfter - age + 1))
                while staleness(holder, heartbeatAge: age) == nil {
                    usleep(1_000_000)
                    guard let (now, nowAge) = read(path), now == holder, nowAge >= age - 0.5 else { break }  // gone or alive
                    age = nowAge
                }
                guard let again = read(path) else { continue }
                (holder, age) = again
            }
            guard let reason = staleness(holder, heartbeatAge: age) else {
                throw RunDirectoryInUseError(description: "\(runDirectory) is in use by a live moe-dist train: host "
                    + "\(holder.host.isEmpty ? "?" : holder.host), pid \(holder.pid) (lock \(path), started \(holder.started), "
                    + String(format: "heartbeat %.0f s ago); ", age)
                    + "wait for it to end or choose another --run-dir (a killed run's lock is taken over at once on its "
                    + "own host, after \(Int(staleAfter)) s without a heartbeat from another)")
            }
            // Take over: move it aside (one contender wins), check it is the lock judged stale, remove it.
            let aside = path + ".stale-" + me.token
            guard rename(path, aside) == 0 else { continue }
            if let moved = try? String(contentsOfFile: aside, encoding: .utf8), Holder(text: moved) == holder {
                unlink(aside)
                warn("taking over the stale lock of \(runDirectory) (host \(holder.host), pid \(holder.pid): \(reason))")
            } else {
                _ = link(aside, path)   // a live lock created meanwhile: put it back (link never overwrites)
                unlink(aside)
            }
        }
        throw RunDirectoryInUseError(description: "\(runDirectory): could not take the lock \(path) (other runs keep taking it)")
    }

    private init(path: String, directory: String, created: Bool, token: String, fd: Int32) {
        self.path = path; self.directory = directory; self.createdDirectory = created; self.token = token; self.fd = fd
        let t = DispatchSource.makeTimerSource(queue: DispatchQueue.global(qos: .utility))
        t.schedule(deadline: .now() + Self.heartbeat, repeating: Self.heartbeat)
        t.setEventHandler { [fd] in _ = futimens(fd, nil) }
        t.resume()
        timer = t
    }

    deinit { release() }

    /// Stops the heartbeat and removes the lock if it is still ours; removes the run directory again if
    /// this lock created it and nothing else was written there (a refused start leaves no trace).
    public func release() {
        guard fd >= 0 else { return }
        timer?.cancel(); timer = nil
        close(fd); fd = -1
        if let text = try? String(contentsOfFile: path, encoding: .utf8), Holder(text: text).token == token { unlink(path) }
        if createdDirectory { rmdir(directory) }
    }

    /// Why `holder` no longer holds its lock, or nil when it may still be alive.
    static func staleness(_ holder: Holder, heartbeatAge: Double) -> String? {
        if holder.host == hostName() && !holder.host.isEmpty {
            if !holder.bootID.isEmpty && holder.bootID != bootID() { return "its host has rebooted since" }
            if holder.pid > 0 && kill(holder.pid, 0) != 0 && errno == ESRCH { return "its process is gone" }
            if holder.pid > 0, !holder.processStart.isEmpty, let now = processStart(holder.pid), now != holder.processStart {
                return "its process is gone (the pid now names another process)"
            }
        }
        if heartbeatAge > staleAfter { return String(format: "no heartbeat for %.0f s", heartbeatAge) }
        return nil
    }

    /// The holder a lock file names and the age of its heartbeat in seconds; nil if it does not exist.
    static func read(_ path: String) -> (Holder, Double)? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        let mtime = Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) * 1e-9
        return (Holder(text: text), Date().timeIntervalSince1970 - mtime)
    }

    /// mkdir -p; true when the last component was created here. Errors name the directory and the cause.
    static func makeDirectories(_ dir: String) throws -> Bool {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: dir, isDirectory: &isDir) {
            guard isDir.boolValue else { throw SystemError("cannot create run directory \(dir)", cause: "a file has that name") }
            return false
        }
        var prefix = dir.hasPrefix("/") ? "" : "."
        var created = false
        for part in dir.split(separator: "/") {
            prefix += "/" + part
            if mkdir(prefix, 0o755) == 0 { created = true; continue }
            if errno == EEXIST { created = false; continue }
            throw SystemError("cannot create run directory \(dir)")
        }
        return created
    }

    static func hostName() -> String {
        var buf = [CChar](repeating: 0, count: 256)
        return gethostname(&buf, buf.count) == 0 ? String(cString: buf) : ""
    }

    static func bootID() -> String {
        ((try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8)) ?? "")
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Field 22 of /proc/PID/stat (start time in clock ticks since boot), nil if unreadable.
    static func processStart(_ pid: Int32) -> String? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? String(fields[19]) : nil   // fields after "(comm)" start at field 3
    }

    static func randomToken() -> String {
        (0 ..< 4).map { _ in String(format: "%08x", UInt32.random(in: 0 ... .max)) }.joined()
    }
}

// Inputs a real user produces by accident, through the real CLI (issue 24): token ids outside the
// vocabulary, a checkpoint failing its checksum, an impossible size, system errors, two runs in one
// directory. Each must end with its documented exit status (docs/exit-status.md) and one line naming the
// file and the cause, before anything is written.
import XCTest
import Foundation
import TestSupport

final class BadInputCLITests: XCTestCase {
    private func moe(_ args: [String], env: [String: String] = [:], timeout: Double = 300) throws -> CommandResult {
        try runCommand(moeDist, args, environment: ["OPENBLAS_NUM_THREADS": "1"].merging(env) { $1 }, timeout: timeout)
    }

    private func assertRefused(_ r: CommandResult, status: Int32, mentions: [String], file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.status, status, "stderr: \(r.stderr)", file: file, line: line)
        let lines = r.stderr.split(separator: "\n").filter { $0.hasPrefix("moe-dist: ") && !$0.hasPrefix("moe-dist: warning") }
        XCTAssertEqual(lines.count, 1, "one error line: \(r.stderr)", file: file, line: line)
        for m in mentions { XCTAssertTrue(r.stderr.contains(m), "\"\(m)\" missing from: \(r.stderr)", file: file, line: line) }
        XCTAssertFalse(r.stderr.contains("Program crashed") || r.stderr.contains("NSCocoaErrorDomain"), r.stderr, file: file, line: line)
    }

    /// A dense tiny run of 4 steps with a checkpoint at step 4 in `dir`; returns the checkpoint.
    private func smallRun(_ dir: String) throws -> String {
        let r = try moe(["train", "--config", tinyConfig, "--run-dir", dir, "moe.num_experts=0", "train.max_steps=4",
                         "train.checkpoint_interval=4", "train.eval_interval=4", "train.eval_tokens=256"])
        XCTAssertEqual(r.status, 0, r.stderr)
        return dir + "/checkpoints/step-00000004.h5"
    }

    func testTokenIdOutsideTheVocabularyIsRefusedBeforeAnythingIsWritten() throws {
        try requireBinary()
        let dir = temporaryDirectory("badid")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var ids = (0 ..< 4000).map { Int32($0 % 256) }
        try writeTokenFile(dir + "/good.tok", ids: ids, vocabSize: 256)
        ids[2345] = 256 + 7
        try writeTokenFile(dir + "/bad.tok", ids: ids, vocabSize: 256)
        let run = dir + "/run"
        for (train, valid) in [("bad.tok", "good.tok"), ("good.tok", "bad.tok")] {
            let r = try moe(["train", "--config", tinyConfig, "--run-dir", run, "data.train=\(dir)/\(train)",
                             "data.valid=\(dir)/\(valid)", "train.max_steps=2"])
            assertRefused(r, status: 3, mentions: ["\(dir)/bad.tok", "token 2345", "id 263", "vocabulary size 256"])
            XCTAssertFalse(FileManager.default.fileExists(atPath: run), "train wrote \(run) before refusing")
            XCTAssertEqual(r.stdout, "", "nothing printed before the error")
        }
        let ck = try smallRun(dir + "/ok")
        let e = try moe(["eval", "--checkpoint", ck, "--data", dir + "/bad.tok"])
        assertRefused(e, status: 3, mentions: ["\(dir)/bad.tok", "token 2345", "id 263"])
        let i = try moe(["data", "inspect", dir + "/bad.tok"])
        XCTAssertEqual(i.status, 3, i.stderr)
    }

    /// A checkpoint that fails its Fletcher-32 checksum: exit 3 from every command that reads it.
    func testDamagedCheckpointIsBadDataInEveryCommand() throws {
        try requireBinary()
        let dir = temporaryDirectory("damaged")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ck = try smallRun(dir + "/run")
        try writeTokenFile(dir + "/v.tok", ids: (0 ..< 600).map { Int32($0 % 256) }, vocabSize: 256)
        // Flip one byte in the middle of the embedding's raw chunk (located with h5py).
        let damaged = dir + "/damaged.h5"
        try FileManager.default.copyItem(atPath: ck, toPath: damaged)
        let offset = try Python.run("""
            import h5py; f = h5py.File('\(damaged)', 'r'); print(f['params/embed'].id.get_chunk_info(0).byte_offset)
            """).trimmingCharacters(in: .whitespacesAndNewlines)
        let h = try XCTUnwrap(FileHandle(forUpdatingAtPath: damaged))
        h.seek(toFileOffset: UInt64(Int(offset)! + 100))
        let byte = h.readData(ofLength: 1)[0]
        h.seek(toFileOffset: UInt64(Int(offset)! + 100))
        h.write(Data([byte ^ 0x10]))
        h.closeFile()
        let mentions = [damaged, "Fletcher32"]
        assertRefused(try moe(["ckpt", "verify", damaged]), status: 3, mentions: mentions)
        assertRefused(try moe(["ckpt", "inspect", damaged]), status: 3, mentions: mentions)
        assertRefused(try moe(["eval", "--checkpoint", damaged, "--data", dir + "/v.tok"]), status: 3, mentions: mentions)
        let r = try moe(["train", "--config", tinyConfig, "--run-dir", dir + "/run", "moe.num_experts=0", "train.max_steps=4",
                         "train.checkpoint_interval=4", "train.eval_interval=4", "train.eval_tokens=256", "--resume", damaged])
        assertRefused(r, status: 3, mentions: mentions)
        XCTAssertFalse(r.stdout.contains("resolved configuration"), "refused before the configuration is printed")
    }

    /// An impossible size is refused before allocation (GeneratedCorpus.make spun on it), naming the estimate,
    /// the memory available and the key; a Slurm allocation is honoured.
    func testSizeThatCannotFitIsRefusedBeforeAllocation() throws {
        try requireBinary()
        let dir = temporaryDirectory("size")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try moe(["train", "--config", tinyConfig, "--run-dir", dir + "/run", "model.vocab_size=100000000"], timeout: 30)
        assertRefused(r, status: 2, mentions: ["102.4 GB", "available", "model.vocab_size"])
        XCTAssertLessThan(r.seconds, 20)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/run"))
        // 1.0 GB needed (vocabulary 1M) against a Slurm allocation of 100 MB per node, for train and bench.
        for cmd in [["train", "--run-dir", dir + "/run"], ["bench", "--steps", "1"]] {
            let s = try moe([cmd[0], "--config", tinyConfig] + cmd.dropFirst() + ["model.vocab_size=1000000"],
                            env: ["SLURM_MEM_PER_NODE": "100"], timeout: 60)
            assertRefused(s, status: 2, mentions: ["SLURM_MEM_PER_NODE=100M", "105 MB is available", "model.vocab_size"])
        }
        let ck = try smallRun(dir + "/ok")
        try writeTokenFile(dir + "/v.tok", ids: (0 ..< 600).map { Int32($0 % 256) }, vocabSize: 256)
        let e = try moe(["eval", "--checkpoint", ck, "--data", dir + "/v.tok"], env: ["SLURM_MEM_PER_CPU": "0.0001"])
        XCTAssertEqual(e.status, 0, "a malformed SLURM_MEM_PER_CPU is ignored: \(e.stderr)")
    }

    /// Slow start-up phases say so (announced after MOE_DIST_SLOW_PHASE_SECONDS, 0 here: every phase), on rank 0.
    func testStartUpPhasesShowProgressWhenSlow() throws {
        try requireBinary()
        let dir = temporaryDirectory("phases")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let r = try moe(["train", "--config", tinyConfig, "--run-dir", dir + "/run", "train.max_steps=1"],
                        env: ["MOE_DIST_SLOW_PHASE_SECONDS": "0"])
        XCTAssertEqual(r.status, 0, r.stderr)
        for phase in ["generating the built-in corpus (vocabulary 256)", "building the model"] {
            XCTAssertTrue(r.stderr.contains("start-up: \(phase) ..."), r.stderr)
            XCTAssertTrue(r.stderr.contains("start-up: \(phase): done in"), r.stderr)
        }
        let quiet = try moe(["train", "--config", tinyConfig, "--run-dir", dir + "/quiet", "train.max_steps=1"])
        XCTAssertFalse(quiet.stderr.contains("building the model"), "fast phases stay silent: \(quiet.stderr)")
    }

    func testRunDirectoryThatCannotBeCreatedIsOneLineBeforeTheBanner() throws {
        try requireBinary()
        let r = try moe(["train", "--config", tinyConfig, "--run-dir", "/proc/moe-run", "train.max_steps=2"])
        assertRefused(r, status: 1, mentions: ["cannot create run directory /proc/moe-run: no such file or directory"])
        XCTAssertEqual(r.stdout, "", "the error comes before the configuration and the banner")
    }

    /// A full disk (a 300 kB tmpfs mounted for the test): one line naming the file and the cause, exit 1,
    /// no crash, and no partial checkpoint or history copy left behind.
    func testFullDiskIsOneLineAndLeavesNoPartialFiles() throws {
        try requireBinary()
        let mnt = temporaryDirectory("full")
        defer { try? FileManager.default.removeItem(atPath: mnt) }
        let m = try runCommand("/bin/mount", ["-t", "tmpfs", "-o", "size=300k", "tmpfs", mnt])
        guard m.status == 0 else { throw missingTool("cannot mount a tmpfs (needs root): \(m.stderr)") }
        defer { _ = try? runCommand("/bin/umount", [mnt]) }
        // A filler leaves room for the history but not for the step-5 checkpoint; without it the history fails.
        for filler in [150, 0] {
            if filler > 0 { try Data(count: filler * 1024).write(to: URL(fileURLWithPath: mnt + "/filler")) }
            let r = try moe(["train", "--config", tinyConfig, "--run-dir", mnt + "/run", "train.max_steps=20",
                             "train.log_interval=1", "train.checkpoint_interval=5"])
            assertRefused(r, status: 1, mentions: ["no space left on device", mnt + "/run/"])
            let left = FileManager.default.enumerator(atPath: mnt)?.allObjects as? [String] ?? []
            XCTAssertTrue(left.filter { $0.contains(".partial") || $0.contains(".tmp") || $0.contains(".restoring") }.isEmpty, "\(left)")
            for snapshot in left where snapshot.hasSuffix(".h5.metrics") {
                let name = String(snapshot.split(separator: "/").last!.dropFirst().dropLast(".metrics".count))
                XCTAssertTrue(left.contains("run/checkpoints/" + name), "history snapshot \(snapshot) without its checkpoint")
            }
            try FileManager.default.removeItem(atPath: mnt + "/run")
            try? FileManager.default.removeItem(atPath: mnt + "/filler")
        }
    }

    /// Two trainings in one directory: the second is refused naming the holder; after kill -9 the lock is
    /// stale and `--resume auto` takes it over; a lock of another host counts until its heartbeat is old.
    func testRunDirectoryLock() throws {
        try requireBinary()
        let dir = temporaryDirectory("lock")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let run = dir + "/run", lockPath = run + "/.moe-dist.lock"
        let common = ["train", "--config", tinyConfig, "--run-dir", run, "train.checkpoint_interval=20", "train.log_interval=20"]
        let first = Process()
        first.executableURL = URL(fileURLWithPath: moeDist)
        first.arguments = common + ["train.max_steps=1000000"]
        first.standardOutput = FileHandle.nullDevice
        first.standardError = FileHandle.nullDevice
        try first.run()
        defer { if first.isRunning { kill(first.processIdentifier, SIGKILL) } }
        // Wait for its first checkpoint (so a resume has something to continue from).
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: run + "/checkpoints/step-00000020.h5") && Date() < deadline { usleep(100_000) }
        let lock = try String(contentsOfFile: lockPath, encoding: .utf8)
        XCTAssertTrue(lock.contains("pid \(first.processIdentifier)"), lock)
        let second = try moe(common + ["train.max_steps=10", "--resume", "auto"])
        assertRefused(second, status: 2, mentions: ["is in use", "pid \(first.processIdentifier)", "host \(ProcessInfo.processInfo.hostName.split(separator: ".").first ?? "")"])
        XCTAssertEqual(second.stdout, "")
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        XCTAssertTrue(FileManager.default.fileExists(atPath: lockPath), "kill -9 leaves the lock")
        let resumed = try moe(common + ["train.max_steps=30", "--resume", "auto", "--allow-config-change"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains("taking over the stale lock"), resumed.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: lockPath), "the lock is removed at the end")

        // Another host's lock: live while its heartbeat is fresh, stale once older than the bound.
        let foreign = "moe-dist run-directory lock\nhost some-other-node\npid 4242\nboot_id x\nprocess_start 1\nstarted then\ntoken abc\n"
        try foreign.write(toFile: lockPath, atomically: true, encoding: .utf8)
        let refused = try moe(common + ["train.max_steps=30"], env: ["MOE_DIST_LOCK_STALE_SECONDS": "60"])
        assertRefused(refused, status: 2, mentions: ["host some-other-node", "pid 4242"])
        let old = Date().addingTimeInterval(-120)
        try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: lockPath)
        let takenOver = try moe(common + ["train.max_steps=31", "--resume", "auto", "--allow-config-change"], env: ["MOE_DIST_LOCK_STALE_SECONDS": "60"])
        XCTAssertEqual(takenOver.status, 0, takenOver.stderr)
        XCTAssertTrue(takenOver.stderr.contains("no heartbeat for"), takenOver.stderr)
        // --resume auto (a job requeued on another node) waits for a fresh foreign lock to go stale.
        try foreign.write(toFile: lockPath, atomically: true, encoding: .utf8)
        // The bound outlasts the start-up before the lock is taken (a debug build generates its corpus for seconds).
        let waited = try moe(common + ["train.max_steps=32", "--resume", "auto", "--allow-config-change"], env: ["MOE_DIST_LOCK_STALE_SECONDS": "20"])
        XCTAssertEqual(waited.status, 0, waited.stderr)
        XCTAssertTrue(waited.stderr.contains("waiting up to"), waited.stderr)
        XCTAssertTrue(waited.stderr.contains("taking over the stale lock"), waited.stderr)
    }

    /// Under mpirun only rank 0 takes the lock, and a refusal ends every rank with status 2.
    func testRunDirectoryLockUnderMPI() throws {
        try requireBinary()
        let dir = temporaryDirectory("lock-mpi")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let run = dir + "/run"
        try FileManager.default.createDirectory(atPath: run, withIntermediateDirectories: true)
        let foreign = "moe-dist run-directory lock\nhost some-other-node\npid 4242\nboot_id x\nprocess_start 1\nstarted then\ntoken abc\n"
        try foreign.write(toFile: run + "/.moe-dist.lock", atomically: true, encoding: .utf8)
        let (exe, args) = try mpirun(2, ["train", "--config", tinyConfig, "--run-dir", run, "train.max_steps=4"])
        let r = try runCommand(exe, args, environment: ["OPENBLAS_NUM_THREADS": "1"])
        XCTAssertEqual(r.status, 2, r.stderr)
        XCTAssertTrue(r.stderr.contains("host some-other-node"), r.stderr)
        try FileManager.default.removeItem(atPath: run + "/.moe-dist.lock")
        let ok = try runCommand(exe, args, environment: ["OPENBLAS_NUM_THREADS": "1"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: run + "/.moe-dist.lock"))
    }
}

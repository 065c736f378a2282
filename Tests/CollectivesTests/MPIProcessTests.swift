// Real MPI: `moe-dist debug collectives` under mpirun (3 ranks), alone (a
// singleton world of one), and with an injected failure that must end the
// job. Uses the already built binary (TestPaths.binary); builds nothing.
import Foundation
import TestSupport
import XCTest

final class MPIProcessTests: XCTestCase {
    struct Result { var status: Int32; var stdout: String; var stderr: String; var seconds: Double; var timedOut: Bool }

    var binary: String { TestPaths.binary }

    func requireBinary() throws {
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw missingTool("\(binary) not built (run `swift build` first)")
        }
    }

    func mpirun() throws -> String {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") + ["/usr/bin"] {
            let p = "\(dir)/mpirun"
            if FileManager.default.isExecutableFile(atPath: p) { return p }
        }
        throw missingTool("mpirun not found on PATH")
    }

    /// Runs `path args`, killing it after `timeout` seconds. `outsideMPI`: without the variables an enclosing
    /// mpirun sets (if the tests themselves run under one), which would make the child a rank of that job.
    func run(_ path: String, _ args: [String], timeout: Double, outsideMPI: Bool = false) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        if outsideMPI { env = env.filter { !$0.key.hasPrefix("OMPI_") && !$0.key.hasPrefix("PMIX_") } }
        env["OMPI_MCA_rmaps_base_oversubscribe"] = "1"
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        let outData = PerRank<Data>(), errData = PerRank<Data>()
        let readers = DispatchGroup()
        for (pipe, store) in [(out, outData), (err, errData)] {
            readers.enter()
            Thread.detachNewThread {
                store.set(0, pipe.fileHandleForReading.readDataToEndOfFile())
                readers.leave()
            }
        }
        let exited = DispatchSemaphore(value: 0)
        p.terminationHandler = { _ in exited.signal() }
        let start = Date()
        try p.run()
        var timedOut = false
        if exited.wait(timeout: .now() + timeout) == .timedOut {
            timedOut = true
            kill(p.processIdentifier, SIGKILL)   // mpirun takes its ranks down with it
            _ = exited.wait(timeout: .now() + 10)
        }
        _ = readers.wait(timeout: .now() + 10)
        let text = { (d: PerRank<Data>) in String(decoding: d[0] ?? Data(), as: UTF8.self) }
        return Result(status: p.isRunning ? -1 : p.terminationStatus, stdout: text(outData), stderr: text(errData),
                      seconds: Date().timeIntervalSince(start), timedOut: timedOut)
    }

    func testCollectivesOnThreeMPIRanks() throws {
        try requireBinary()
        let r = try run(try mpirun(), ["--allow-run-as-root", "--oversubscribe", "-np", "3", binary, "debug", "collectives"],
                        timeout: 120)
        XCTAssertFalse(r.timedOut, "mpirun did not finish in 120 s")
        XCTAssertEqual(r.status, 0, "stderr: \(r.stderr)")
        XCTAssertTrue(r.stdout.contains("collectives OK") && r.stdout.contains("on 3 ranks (MPI"), r.stdout)
    }

    func testCollectivesCutIntoSmallMPICalls() throws {
        try requireBinary()
        let r = try run(try mpirun(), ["--allow-run-as-root", "--oversubscribe", "-np", "3", binary, "debug", "collectives",
                                       "--max-elements-per-call", "1000"], timeout: 120)
        XCTAssertFalse(r.timedOut)
        XCTAssertEqual(r.status, 0, "stderr: \(r.stderr)")
        XCTAssertTrue(r.stdout.contains("on 3 ranks (MPI"), r.stdout)
    }

    func testWithoutMPIRunTheWorldIsOneRank() throws {
        try requireBinary()
        var r = try run(binary, ["debug", "collectives"], timeout: 60, outsideMPI: true)
        XCTAssertFalse(r.timedOut)
        XCTAssertEqual(r.status, 0, "stderr: \(r.stderr)")
        XCTAssertTrue(r.stdout.contains("on 1 rank (MPI"), r.stdout)
        r = try run(binary, ["debug", "collectives", "--emulate-ranks", "3"], timeout: 60, outsideMPI: true)
        XCTAssertEqual(r.status, 0, "stderr: \(r.stderr)")
        XCTAssertTrue(r.stdout.contains("on 3 ranks (threads"), r.stdout)
    }

    func testFailingRankEndsTheMPIJob() throws {
        try requireBinary()
        let r = try run(try mpirun(), ["--allow-run-as-root", "--oversubscribe", "-np", "3", binary, "debug", "collectives",
                                       "--fail-rank", "1"], timeout: 30)
        XCTAssertFalse(r.timedOut, "the job did not end within 30 s after rank 1 failed")
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("moe-dist: rank 1: injected failure"), r.stderr)
        XCTAssertFalse(r.stdout.contains("collectives OK"), r.stdout)
    }

    func testFailingRankEndsAnEmulatedWorld() throws {
        try requireBinary()
        let r = try run(binary, ["debug", "collectives", "--emulate-ranks", "4", "--fail-rank", "2"], timeout: 30)
        XCTAssertFalse(r.timedOut)
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("rank 2: injected failure"), r.stderr)
    }
}

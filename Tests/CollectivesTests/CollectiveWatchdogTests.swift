// The collective watchdog's pieces that need no MPI job: who it names from the ranks' notes, and
// what marking a call costs. The watchdog's firing under mpirun (a SIGSTOPped rank, one host and
// two emulated hosts) is tested by scripts/test_cluster_failures.sh.
@testable import Collectives
import Foundation
import XCTest

final class CollectiveWatchdogTests: XCTestCase {
    let hosts = ["node01", "node01", "node02"]

    private func notesDirectory() throws -> String {
        let dir = NSTemporaryDirectory() + "watchdog-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    /// A watchdog as world rank `rank` of a 3-rank job, noting in `dir` (not started: no thread).
    private func rank(_ rank: Int, _ dir: String?, job: String = "node01:42:1") -> CollectiveWatchdog {
        let w = CollectiveWatchdog()
        w.arm(timeout: 0, hosts: hosts, job: job, worldRank: rank)
        if let dir { w.noteIn(dir) }
        return w
    }

    func testNamesTheRankWithoutANoteForTheCall() throws {
        let dir = try notesDirectory()
        let world = CollectiveWatchdog.Identity(label: "world", worldRanks: [0, 1, 2])
        rank(0, dir).writeNote(world, 7, "MPI_Barrier")
        rank(1, dir).writeNote(world, 7, "MPI_Barrier")
        rank(2, dir).writeNote(world, 6, "MPI_Barrier")       // an earlier call: rank 2 never reached call 7
        XCTAssertEqual(rank(0, dir).arrived(world, 7), [0, 1])
        let m = rank(0, dir).timeoutMessage(world, 7, "MPI_Barrier", waited: 5.04)
        XCTAssertTrue(m.contains("rank 0 (host node01): collective timeout: MPI_Barrier (call 7 on communicator world)"), m)
        XCTAssertTrue(m.contains("after 5.0 s (parallel.collective_timeout = 0 s): rank 2 (host node02) did not arrive; "
                                 + "ranks 0, 1 waited in it."), m)
    }

    func testNotesOfAnotherJobOrCommunicatorDoNotCount() throws {
        let dir = try notesDirectory()
        let group = CollectiveWatchdog.Identity(label: "world/split(color 0)", worldRanks: [1, 2])
        let world = CollectiveWatchdog.Identity(label: "world", worldRanks: [0, 1, 2])
        rank(1, dir).writeNote(group, 3, "MPI_Alltoallv(float)")
        rank(2, dir, job: "node01:41:1").writeNote(group, 3, "MPI_Alltoallv(float)")   // an earlier job's note
        rank(0, dir).writeNote(world, 3, "MPI_Alltoallv(float)")                        // another communicator
        XCTAssertEqual(rank(1, dir).arrived(group, 3), [1])
        let m = rank(1, dir).timeoutMessage(group, 3, "MPI_Alltoallv(float)", waited: 9)
        XCTAssertTrue(m.contains("rank 2 (host node02) did not arrive; rank 1 waited in it."), m)
    }

    func testWithoutADirectoryListsTheCandidates() {
        let world = CollectiveWatchdog.Identity(label: "world", worldRanks: [0, 1, 2])
        let m = rank(1, nil).timeoutMessage(world, 2, "MPI_Bcast", waited: 1)
        XCTAssertTrue(m.contains("one of ranks 0 (host node01), 2 (host node02) did not arrive"), m)
    }

    /// The cost of marking one MPI call (enter + leave) with the watchdog running. A step of the tiny
    /// configuration makes ~20 calls, of bench.yaml ~100 (docs/cluster.md); printed, and bounded
    /// loosely (the machine is shared) at 2 µs per call.
    func testMarkingACallCostsLittle() {
        let w = CollectiveWatchdog()
        w.arm(timeout: 3600, hosts: hosts, job: "x", worldRank: 0)   // starts the watching thread
        let world = CollectiveWatchdog.Identity(label: "world", worldRanks: [0, 1, 2])
        let n = 1_000_000
        var best = Double.infinity
        for _ in 0 ..< 3 {
            let t0 = CollectiveWatchdog.now()
            for _ in 0 ..< n { w.enter("MPI_Barrier", world); w.leave() }
            best = min(best, (CollectiveWatchdog.now() - t0) / Double(n))
        }
        print("collective watchdog: \(String(format: "%.1f", best * 1e9)) ns per marked call (enter + leave, best of 3 × \(n))")
        XCTAssertEqual(world.calls, 3 * n)
        XCTAssertLessThan(best, 2e-6)
    }
}

// The collective watchdog's pieces that need no MPI job: who it names from the ranks' notes, and
// what marking a call costs. The watchdog's firing under mpirun (a SIGSTOPped rank, one host and
// two emulated hosts) is tested by scripts/test_cluster_failures.sh.
@testable import Collectives
import Foundation
import XCTest

final class CollectiveWatchdogTests: XCTestCase {
    let hosts = ["node01", "node01", "node02", "node02"]
    let world = CollectiveWatchdog.Identity(label: "world", worldRanks: [0, 1, 2, 3])

    private func notesDirectory() throws -> String {
        let dir = NSTemporaryDirectory() + "watchdog-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: dir) }
        return dir
    }

    /// A watchdog as world rank `rank` of a 4-rank job, noting in `dir`, inside call `n` on `comm`
    /// (its thread not started: the test beats for it).
    private func rank(_ rank: Int, _ dir: String?, job: String = "node01:42:1",
                      in comm: CollectiveWatchdog.Identity? = nil, call n: Int = 0) -> CollectiveWatchdog {
        let w = CollectiveWatchdog()
        w.arm(timeout: 0, hosts: hosts, job: job, worldRank: rank)
        if let dir { w.noteIn(dir) }
        if let comm { while comm.calls < n { w.enter("MPI_Barrier", comm) }; w.markActiveForTest(comm) }
        return w
    }

    func testLivingRanksAreThoseWhoseNotesChanged() {
        let a = [0: "beat=1", 1: "beat=4", 2: "beat=7"]
        let b = [0: "beat=2", 2: "beat=7", 3: "beat=1"]
        // 0 beat again, 1 left its call (note removed), 3 began waiting: alive. 2 did not beat: stopped.
        XCTAssertEqual(CollectiveWatchdog.living(a, b), [0, 1, 3])
    }

    func testNamesTheRankWhoseNoteDidNotBeat() throws {
        let dir = try notesDirectory()
        // Each process has its own object for the communicator (and its own count of calls on it).
        let g = (0 ..< 3).map { _ in CollectiveWatchdog.Identity(label: "world/split(color 0)", worldRanks: [0, 1, 2]) }
        let group = g[0]
        let r0 = rank(0, dir, in: g[0], call: 7), r1 = rank(1, dir, in: g[1], call: 6), r2 = rank(2, dir, in: g[2], call: 7)
        XCTAssertTrue(r0.beat(g[0], 7, "MPI_Alltoallv(float)"))
        XCTAssertTrue(r1.beat(g[1], 6, "MPI_Alltoallv(float)"))
        XCTAssertTrue(r2.beat(g[2], 7, "MPI_Alltoallv(float)"))
        XCTAssertFalse(r1.beat(g[1], 7, "MPI_Alltoallv(float)"), "not in that call")
        let first = try XCTUnwrap(r0.readNotes())
        XCTAssertEqual(Set(first.keys), [0, 1, 2])
        r1.beat(g[1], 6, "MPI_Alltoallv(float)")        // rank 1 is alive in an earlier call; rank 2 stopped
        let alive = CollectiveWatchdog.living(first, try XCTUnwrap(r0.readNotes()))
        XCTAssertEqual(alive, [1])
        let m = r0.timeoutMessage(group, 7, "MPI_Alltoallv(float)", waited: 5.04, alive: alive)
        XCTAssertTrue(m.contains("rank 0 (host node01): collective timeout: MPI_Alltoallv(float) (call 7 on communicator "
                                 + "world/split(color 0)) has not finished after 5.0 s"), m)
        XCTAssertTrue(m.contains("rank 2 (host node02) did not arrive; ranks 0, 1 waited in collectives."), m)
        // Leaving the call removes the note.
        r1.leaveForTest()
        XCTAssertNil(try XCTUnwrap(r0.readNotes())[1])
    }

    func testNotesOfAnotherJobDoNotCount() throws {
        let dir = try notesDirectory()
        let old = rank(3, dir, job: "node01:41:1", in: world, call: 2)
        XCTAssertTrue(old.beat(world, 2, "MPI_Bcast"))
        XCTAssertEqual(rank(0, dir).readNotes(), [:])
    }

    func testWhenEveryMemberLivesNamesTheSilentRankElsewhere() {
        let group = CollectiveWatchdog.Identity(label: "world/split(color 0)", worldRanks: [0, 1])
        let m = rank(0, "/nonexistent-unused").timeoutMessage(group, 3, "MPI_Allreduce(sum, float)", waited: 9, alive: [1, 2])
        XCTAssertTrue(m.contains("every rank of it waits in a collective; no sign of life from rank 3 (host node02)"), m)
    }

    func testWithoutADirectoryListsTheCandidates() {
        let m = rank(1, nil).timeoutMessage(world, 2, "MPI_Bcast", waited: 1, alive: nil)
        XCTAssertTrue(m.contains("one of ranks 0 (host node01), 2 (host node02), 3 (host node02) did not arrive"), m)
    }

    /// The cost of marking one MPI call (enter + leave) with the watchdog running. A step of the tiny
    /// configuration on 3 ranks makes ~18 calls (docs/cluster-failures.md); printed, and bounded
    /// loosely (the machine is shared) at 2 µs per call.
    func testMarkingACallCostsLittle() {
        let w = CollectiveWatchdog()
        w.arm(timeout: 3600, hosts: hosts, job: "x", worldRank: 0)   // starts the watching thread
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

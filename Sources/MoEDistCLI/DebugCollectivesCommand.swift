// `moe-dist debug collectives`: runs the collective self-test over MPI (under
// mpirun, or as a world of one without it) or over an in-process ThreadWorld.
import ArgumentParser
import Collectives
import Foundation

struct DebugCollectivesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "collectives",
        abstract: "Check every collective (all-reduce, all-to-all(v), broadcast, split) on this job's ranks.",
        discussion: reflow("""
            Run under mpirun to test MPI, or alone for a world of one. Exits non-zero, after ending
            every rank, at the first mismatch.
            Example:
              mpirun -np 3 moe-dist debug collectives
            """))

    @Option(help: "Make this rank fail after the first check, to test that a failing rank ends the job.")
    var failRank: Int?

    @Option(help: "Run on N in-process ranks (threads) instead of MPI.")
    var emulateRanks: Int?

    @Option(help: ArgumentHelp("Cut MPI reductions and broadcasts into calls of at most N elements (tests the cutting).",
                               visibility: .hidden))
    var maxElementsPerCall: Int?

    func validate() throws {
        if let n = maxElementsPerCall, n < 1 { throw ValidationError("--max-elements-per-call must be at least 1, got \(n)") }
        if let n = emulateRanks, n < 1 { throw ValidationError("--emulate-ranks must be at least 1, got \(n)") }
    }

    func run() throws {
        if let n = emulateRanks {
            let start = Date()
            do {
                try ThreadWorld.run(size: n) { comm in
                    let checks: Int
                    do { checks = try CollectiveSelfTest.run(comm, failRank: failRank) }
                    catch { throw CommunicatorError("rank \(comm.rank): \(error)") }
                    if comm.rank == 0 { report(checks, comm.size, "threads", Date().timeIntervalSince(start)) }
                }
            } catch {
                FileHandle.standardError.write(Data("moe-dist: \(error)\n".utf8))
                throw ExitCode.failure
            }
            return
        }
        if let n = maxElementsPerCall { MPICommunicator.maxElementsPerCall = n }
        let comm = MPICommunicator.world()
        let start = MPI.wtime()
        do {
            let checks = try CollectiveSelfTest.run(comm, failRank: failRank)
            let level = MPI.providedThreadLevel.map(MPI.threadLevelName) ?? "unknown"
            if comm.rank == 0 { report(checks, comm.size, "MPI, thread level \(level)", MPI.wtime() - start) }
        } catch {
            // A rank that stops while the others wait in a collective must end the job.
            comm.abort(code: 1, message: "\(error)")
        }
    }

    private func report(_ checks: Int, _ size: Int, _ transport: String, _ seconds: Double) {
        print("collectives OK: \(checks) checks on \(size) rank\(size == 1 ? "" : "s") (\(transport), "
              + String(format: "%.2f s)", seconds))
    }
}

// Preemption: SIGTERM or SIGUSR1 (what Slurm sends before a time limit, with
// `--signal`) asks the run to finish its current step, write a checkpoint and the
// history, and exit with `Preemption.exitStatus` on every rank.
import Foundation

public enum Preemption {
    /// Exit status of a preempted run (EX_TEMPFAIL): a checkpoint was written; resume with --resume auto.
    public static let exitStatus: Int32 = 75

    nonisolated(unsafe) private static var flag: sig_atomic_t = 0
    nonisolated(unsafe) private static var signalNumber: sig_atomic_t = 0

    /// Installs the handlers (idempotent). The handler only sets a flag.
    public static func install() {
        for s in [SIGTERM, SIGUSR1] {
            signal(s) { n in Preemption.flag = 1; Preemption.signalNumber = n }
        }
    }

    /// True once a preemption signal arrived in this process.
    public static var requested: Bool { flag != 0 }
    public static var signalName: String { signalNumber == SIGUSR1 ? "SIGUSR1" : "SIGTERM" }
}

/// Thrown by a session that stopped because of a preemption signal, after it checkpointed.
public struct PreemptedError: Error, CustomStringConvertible {
    public var step: Int
    public var checkpoint: String?
    public var description: String {
        "preempted at step \(step); " + (checkpoint.map { "checkpoint \($0) written; resume with --resume auto" } ?? "no run directory, nothing saved")
    }
}

// The exit statuses of every moe-dist command (docs/exit-status.md), one table for all.
import Training

enum ExitStatus {
    /// Finished as asked (for `gate`: whatever the decisions).
    static let success: Int32 = 0
    /// Runtime failure: an I/O or HDF5 error, a failed rank, anything not caused by the inputs.
    static let failure: Int32 = 1
    /// Usage or configuration error: a bad option or argument, an unknown key or impossible value, a resume
    /// whose configuration differs from the checkpoint's.
    static let usage: Int32 = 2
    /// Bad data: an input file (token file, tokenizer, text, checkpoint, history, run directory) that is
    /// missing, unreadable, damaged, or does not belong with the others (another tokenizer or vocabulary).
    static let badData: Int32 = 3
    /// Preempted (SIGTERM/SIGUSR1): a checkpoint was written; resume with --resume auto (EX_TEMPFAIL).
    static let preempted: Int32 = Preemption.exitStatus
}

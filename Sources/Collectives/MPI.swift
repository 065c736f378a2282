// The Swift face of the CMPI shim: library start-up and shut-down, and the
// turning of MPI return codes into messages. Collectives themselves live in
// MPICommunicator; a collective that fails mid-job cannot be recovered, so
// MPICommunicator aborts the job with the message made here.
import CMPI
import Foundation

/// Namespace for process-wide MPI state.
public enum MPI {
    /// Thread level this process asked MPI for (`MPI_THREAD_SERIALIZED`: any
    /// thread may call MPI, but never two at once).
    public static var requestedThreadLevel: Int32 { moe_mpi_thread_serialized() }

    /// Thread level MPI granted, or nil before `initialize()`.
    public static var providedThreadLevel: Int32? {
        state.lock.lock(); defer { state.lock.unlock() }
        return state.provided
    }

    /// "single", "funneled", "serialized" or "multiple" for an MPI thread level.
    public static func threadLevelName(_ level: Int32) -> String {
        ["single", "funneled", "serialized", "multiple"].indices.contains(Int(level))
            ? ["single", "funneled", "serialized", "multiple"][Int(level)] : "level \(level)"
    }

    /// True between a successful `initialize()` and `finalize()`.
    public static var isActive: Bool { moe_mpi_initialized() != 0 && moe_mpi_finalized() == 0 }

    /// Starts MPI once per process (later calls do nothing): `MPI_Init_thread`
    /// at `MPI_THREAD_SERIALIZED`, errors on `MPI_COMM_WORLD` set to return
    /// codes, and `MPI_Finalize` registered to run when the process exits
    /// with status 0 (on glibc; with any status elsewhere). A rank that exits
    /// with another status skips it, so mpirun notices and ends the job
    /// instead of the others waiting for it. Without `mpirun` OpenMPI starts a
    /// singleton, a world of one.
    public static func initialize() throws {
        state.lock.lock(); defer { state.lock.unlock() }
        if state.provided != nil { return }
        if moe_mpi_finalized() != 0 { throw CommunicatorError("MPI was already finalized; it cannot be started again") }
        var provided: Int32 = 0
        if moe_mpi_initialized() == 0 {
            try check(moe_mpi_init_thread(moe_mpi_thread_serialized(), &provided), "MPI_Init_thread")
            if moe_mpi_register_exit_finalize() != 0 {
                throw CommunicatorError("cannot register MPI_Finalize to run at exit")
            }
        } else {
            try check(moe_mpi_query_thread(&provided), "MPI_Query_thread")   // started by someone else
        }
        if provided < moe_mpi_thread_funneled() {
            throw CommunicatorError("MPI granted thread level \(provided), below MPI_THREAD_FUNNELED")
        }
        try check(moe_mpi_comm_set_errors_return(moe_mpi_comm_world()), "MPI_Comm_set_errhandler")
        state.provided = provided
    }

    /// Calls `MPI_Finalize` if MPI is active (it also runs by itself at a
    /// successful exit). Every rank must reach it: a rank that fails must
    /// `abort`, or exit with a non-zero status, instead.
    public static func finalize() {
        state.lock.lock(); defer { state.lock.unlock() }
        if moe_mpi_initialized() != 0 && moe_mpi_finalized() == 0 { _ = moe_mpi_finalize() }
    }

    /// Seconds since an arbitrary point in the past (`MPI_Wtime`).
    public static func wtime() -> Double { moe_mpi_wtime() }

    /// The text MPI gives for an error code.
    public static func errorString(_ code: Int32) -> String {
        var buffer = [CChar](repeating: 0, count: Int(moe_mpi_max_error_string()) + 1)
        moe_mpi_error_string(code, &buffer)
        return String(cString: buffer)
    }

    /// Throws a `CommunicatorError` naming `operation` when `code` is not `MPI_SUCCESS`.
    public static func check(_ code: Int32, _ operation: @autoclosure () -> String) throws {
        if code != MPI_SUCCESS {
            throw CommunicatorError("\(operation()) failed: \(errorString(code)) (MPI error \(code))")
        }
    }

    private final class State: @unchecked Sendable {
        let lock = NSLock()
        var provided: Int32? = nil
    }
    private static let state = State()
}

// CMPI: a thin shim over OpenMPI. OpenMPI's MPI_COMM_WORLD, datatypes and ops
// are macros Swift cannot import; the functions here wrap them.
//
// Every function returns the MPI error code (MPI_SUCCESS = 0) unless it says
// otherwise; the Swift side (Collectives/MPI.swift) turns codes into messages.
// Counts and displacements are C `int`, as in MPI-3: callers check that their
// sizes fit (the Swift side chunks reductions and broadcasts, and fails
// clearly on an all-to-all-v whose counts or displacements exceed INT_MAX).
#pragma once
#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>

// MARK: - Library state

/// Thread level the shim requests: one thread at a time may call MPI, any thread.
static inline int moe_mpi_thread_serialized(void) { return MPI_THREAD_SERIALIZED; }
static inline int moe_mpi_thread_funneled(void) { return MPI_THREAD_FUNNELED; }

/// MPI_Init_thread without argc/argv (OpenMPI takes its settings from the
/// environment). Without mpirun OpenMPI starts a singleton: a world of one.
static inline int moe_mpi_init_thread(int required, int *provided) {
    return MPI_Init_thread(NULL, NULL, required, provided);
}

/// The thread level MPI runs at (MPI_Query_thread).
static inline int moe_mpi_query_thread(int *provided) { return MPI_Query_thread(provided); }

/// 1 once MPI_Init has run (even after finalize), else 0.
static inline int moe_mpi_initialized(void) {
    int flag = 0;
    MPI_Initialized(&flag);
    return flag;
}

/// 1 once MPI_Finalize has run, else 0.
static inline int moe_mpi_finalized(void) {
    int flag = 0;
    MPI_Finalized(&flag);
    return flag;
}

static inline int moe_mpi_finalize(void) { return MPI_Finalize(); }

static void moe_mpi_finalize_if_exit_ok(int status, void *unused) {
    (void)unused;
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (status == 0 && initialized && !finalized) MPI_Finalize();
}
#ifndef __GLIBC__
static void moe_mpi_finalize_at_exit(void) { moe_mpi_finalize_if_exit_ok(0, NULL); }
#endif

/// Finalizes MPI when the process exits with status 0. A rank exiting with
/// any other status skips MPI_Finalize (which would wait for the other ranks,
/// possibly forever), so mpirun sees it fail and ends the job. glibc's
/// on_exit passes the status; elsewhere atexit always finalizes.
static inline int moe_mpi_register_exit_finalize(void) {
#ifdef __GLIBC__
    return on_exit(moe_mpi_finalize_if_exit_ok, NULL);
#else
    return atexit(moe_mpi_finalize_at_exit);
#endif
}

/// Seconds since an arbitrary point in the past (MPI_Wtime).
static inline double moe_mpi_wtime(void) { return MPI_Wtime(); }

// MARK: - Communicators

static inline MPI_Comm moe_mpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Comm moe_mpi_comm_null(void) { return MPI_COMM_NULL; }

static inline int moe_mpi_comm_rank(MPI_Comm comm, int *rank) { return MPI_Comm_rank(comm, rank); }
static inline int moe_mpi_comm_size(MPI_Comm comm, int *size) { return MPI_Comm_size(comm, size); }

/// Ranks with equal `color` (>= 0) form `*newcomm`, ordered by `key` then old rank.
static inline int moe_mpi_comm_split(MPI_Comm comm, int color, int key, MPI_Comm *newcomm) {
    return MPI_Comm_split(comm, color, key, newcomm);
}

static inline int moe_mpi_comm_free(MPI_Comm *comm) { return MPI_Comm_free(comm); }

/// The MPI_COMM_WORLD rank of each of `comm`'s `size` ranks, into `world_ranks`
/// (local: no communication). The collective watchdog names ranks by their world rank.
static inline int moe_mpi_comm_world_ranks(MPI_Comm comm, int size, int *world_ranks) {
    MPI_Group group, world_group;
    int code = MPI_Comm_group(comm, &group);
    if (code != MPI_SUCCESS) return code;
    code = MPI_Comm_group(MPI_COMM_WORLD, &world_group);
    if (code != MPI_SUCCESS) { MPI_Group_free(&group); return code; }
    int *ranks = malloc(sizeof(int) * (size_t)(size > 0 ? size : 1));
    if (ranks == NULL) { MPI_Group_free(&group); MPI_Group_free(&world_group); return MPI_ERR_NO_MEM; }
    for (int i = 0; i < size; i++) ranks[i] = i;
    code = MPI_Group_translate_ranks(group, size, ranks, world_group, world_ranks);
    free(ranks);
    MPI_Group_free(&group);
    MPI_Group_free(&world_group);
    return code;
}

/// Errors on `comm` (and on communicators later split from it) return codes
/// instead of aborting inside MPI, so the caller can report them.
static inline int moe_mpi_comm_set_errors_return(MPI_Comm comm) {
    return MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
}

/// Ends every process of the job (OpenMPI aborts the whole job whatever `comm`).
static inline int moe_mpi_abort(MPI_Comm comm, int code) { return MPI_Abort(comm, code); }

// MARK: - Errors

static inline int moe_mpi_max_error_string(void) { return MPI_MAX_ERROR_STRING; }

/// Writes the text of `code` into `buffer` (at least moe_mpi_max_error_string()
/// bytes), NUL-terminated.
static inline void moe_mpi_error_string(int code, char *buffer) {
    int length = 0;
    if (MPI_Error_string(code, buffer, &length) != MPI_SUCCESS) length = 0;
    if (length < 0) length = 0;
    if (length >= MPI_MAX_ERROR_STRING) length = MPI_MAX_ERROR_STRING - 1;
    buffer[length] = '\0';
}

// MARK: - Collectives

/// In-place element-wise sum over all ranks.
static inline int moe_mpi_allreduce_sum_float(MPI_Comm comm, float *buffer, int count) {
    return MPI_Allreduce(MPI_IN_PLACE, buffer, count, MPI_FLOAT, MPI_SUM, comm);
}
static inline int moe_mpi_allreduce_sum_double(MPI_Comm comm, double *buffer, int count) {
    return MPI_Allreduce(MPI_IN_PLACE, buffer, count, MPI_DOUBLE, MPI_SUM, comm);
}
static inline int moe_mpi_allreduce_sum_int64(MPI_Comm comm, int64_t *buffer, int count) {
    return MPI_Allreduce(MPI_IN_PLACE, buffer, count, MPI_INT64_T, MPI_SUM, comm);
}
/// In-place element-wise maximum over all ranks.
static inline int moe_mpi_allreduce_max_double(MPI_Comm comm, double *buffer, int count) {
    return MPI_Allreduce(MPI_IN_PLACE, buffer, count, MPI_DOUBLE, MPI_MAX, comm);
}

/// One int64 to and from every rank: send[j] goes to rank j, recv[i] comes from rank i.
static inline int moe_mpi_alltoall_int64(MPI_Comm comm, const int64_t *send, int64_t *recv) {
    return MPI_Alltoall(send, 1, MPI_INT64_T, recv, 1, MPI_INT64_T, comm);
}

/// Personalised exchange of floats; counts and displacements in elements.
static inline int moe_mpi_alltoallv_float(MPI_Comm comm,
                                          const float *send, const int *send_counts, const int *send_displs,
                                          float *recv, const int *recv_counts, const int *recv_displs) {
    return MPI_Alltoallv(send, send_counts, send_displs, MPI_FLOAT,
                         recv, recv_counts, recv_displs, MPI_FLOAT, comm);
}

/// Personalised exchange of int64s; counts and displacements in elements.
static inline int moe_mpi_alltoallv_int64(MPI_Comm comm,
                                          const int64_t *send, const int *send_counts, const int *send_displs,
                                          int64_t *recv, const int *recv_counts, const int *recv_displs) {
    return MPI_Alltoallv(send, send_counts, send_displs, MPI_INT64_T,
                         recv, recv_counts, recv_displs, MPI_INT64_T, comm);
}

/// `count` bytes from `root` to every rank.
static inline int moe_mpi_bcast_bytes(MPI_Comm comm, void *buffer, int count, int root) {
    return MPI_Bcast(buffer, count, MPI_BYTE, root, comm);
}

static inline int moe_mpi_barrier(MPI_Comm comm) { return MPI_Barrier(comm); }

/// Every rank's `count` bytes, in rank order: `recv` holds size × count bytes.
static inline int moe_mpi_allgather_bytes(MPI_Comm comm, const void *send, void *recv, int count) {
    return MPI_Allgather(send, count, MPI_BYTE, recv, count, MPI_BYTE, comm);
}

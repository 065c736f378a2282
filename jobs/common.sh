# shellcheck shell=bash
# Shared by jobs/*.sbatch and jobs/submit_phase.sh (sourced, not run).
#
# Inside a batch job the script Slurm runs is a copy in the slurmd spool directory, so the
# jobs directory cannot be found from $0: submit_phase.sh exports JOBS_DIR (sbatch passes the
# environment on), and SLURM_SUBMIT_DIR/jobs is the fallback.

moe_log() { echo "[$(date -u +%H:%M:%S)] $*"; }
moe_die() { echo "[$(date -u +%H:%M:%S)] error: $*" >&2; exit 2; }

# The trainer binary: MOE_DIST, then MOE_DIST_BIN, then the repository's release or debug
# build, then moe-dist on PATH. Sets MOE_DIST to an absolute path.
moe_resolve_binary() {
    local repo=${REPO_DIR:-${JOBS_DIR:-${SLURM_SUBMIT_DIR:-.}/jobs}/..} cand
    for cand in "${MOE_DIST:-}" "${MOE_DIST_BIN:-}" "$repo/.build/release/moe-dist" "$repo/.build/debug/moe-dist"; do
        if [[ -n "$cand" && -x "$cand" ]]; then MOE_DIST=$(cd "$(dirname "$cand")" && pwd)/$(basename "$cand"); export MOE_DIST; return 0; fi
    done
    if command -v moe-dist >/dev/null; then MOE_DIST=$(command -v moe-dist); export MOE_DIST; return 0; fi
    moe_die "moe-dist not found: set MOE_DIST=/path/to/moe-dist (or build it: swift build -c release)"
}

# Phase order of the ablation matrix; prints the phase after $1, or nothing after the last.
moe_next_phase() {
    case "$1" in
        1) echo 1b ;;
        1b) echo 2 ;;
        2) echo 3 ;;
        3) echo "" ;;
        *) moe_die "unknown phase '$1' (phases: 1 1b 2 3)" ;;
    esac
}

# Position of a phase in that order, for MAX_PHASE comparisons.
moe_phase_rank() {
    case "$1" in 1) echo 1 ;; 1b) echo 2 ;; 2) echo 3 ;; 3) echo 4 ;; *) moe_die "unknown phase '$1'" ;; esac
}

# Run directory of a sweep config: SWEEP_DIR/runs/<config basename without .yaml/.yml>.
moe_run_dir_for() {
    local base
    base=$(basename "$1"); base=${base%.yaml}; base=${base%.yml}
    echo "$SWEEP_DIR/runs/$base"
}

# The launcher command for one training run of the current allocation, in the array LAUNCH.
#   LAUNCHER=srun (default): srun --mpi=$SRUN_MPI (pmix) over the job's tasks.
#   LAUNCHER=mpirun: Open MPI's mpirun inside the allocation (it reads the Slurm
#                    environment for hosts and slots; --allow-run-as-root added for root).
#   LAUNCHER=none: run the binary directly (one rank, no MPI launcher).
moe_launch_cmd() {
    # Without --ntasks, sbatch runs one task per node and may leave SLURM_NTASKS unset.
    local ntasks=${SLURM_NTASKS:-${SLURM_JOB_NUM_NODES:-1}}
    case "${LAUNCHER:-srun}" in
        srun) LAUNCH=(srun --mpi="${SRUN_MPI:-pmix}" --ntasks="$ntasks" --kill-on-bad-exit=1) ;;
        mpirun)
            LAUNCH=(mpirun -np "$ntasks" -x OPENBLAS_NUM_THREADS)
            [[ $(id -u) == 0 ]] && LAUNCH+=(--allow-run-as-root)
            # shellcheck disable=SC2206
            LAUNCH+=(${MPIRUN_ARGS:-}) ;;
        none) LAUNCH=() ;;
        *) moe_die "LAUNCHER must be srun, mpirun or none (got '${LAUNCHER}')" ;;
    esac
}

# Signal forwarding. With '#SBATCH --signal=B:USR1@SECS' Slurm signals only this batch shell
# SECS seconds before the time limit; we pass the signal on to the launcher (srun and mpirun
# forward SIGUSR1 to every rank), the trainer finishes its step, checkpoints and exits 75.
# SIGTERM (scancel, preemption, the time limit itself) is passed on the same way.
MOE_CHILD=""
MOE_SIGNALLED=""
moe_forward() {
    MOE_SIGNALLED=$1
    moe_log "batch script got SIG$1; forwarding to the launcher (pid ${MOE_CHILD:-none})"
    if [[ -n "$MOE_CHILD" ]]; then kill -s "$1" "$MOE_CHILD" 2>/dev/null || true; fi
}

# moe_train CONFIG RUN_DIR [override...]: launches the trainer with --resume auto and
# handles preemption. Exit status: that of the trainer, except that status 75 (checkpointed
# after SIGUSR1/SIGTERM) requeues this job (scontrol requeue; needs --requeue, which the
# sbatch files set) and then exits 0 so the job is not counted as failed. After MAX_REQUEUES
# restarts (default 20) it gives up and exits 75.
moe_train() {
    local config=$1 run_dir=$2; shift 2
    local rc
    moe_resolve_binary
    moe_launch_cmd
    export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
    mkdir -p "$run_dir"
    moe_log "job ${SLURM_JOB_ID:-?} (array ${SLURM_ARRAY_JOB_ID:-none} task ${SLURM_ARRAY_TASK_ID:-none}, restart ${SLURM_RESTART_COUNT:-0}) on ${SLURMD_NODENAME:-$(hostname -s)}: ${SLURM_NTASKS:-1} rank(s), OPENBLAS_NUM_THREADS=$OPENBLAS_NUM_THREADS"
    moe_log "config $config -> run dir $run_dir"
    # shellcheck disable=SC2086
    set -- "${LAUNCH[@]}" "$MOE_DIST" train --config "$config" --run-dir "$run_dir" --resume auto ${EXTRA_OVERRIDES:-} "$@"
    moe_log "launch: $*"
    # The trainer appends to RUN_DIR/train.log on every start, even of a finished run: if that
    # file did not grow, the launcher exited without starting it (seen with srun when a
    # requeued job is relaunched while slurmd still cleans up the previous attempt's step).
    local log_before
    log_before=$(stat -c %s "$run_dir/train.log" 2>/dev/null || echo -1)
    trap 'moe_forward USR1' USR1
    trap 'moe_forward TERM' TERM
    "$@" &
    MOE_CHILD=$!
    while :; do
        rc=0
        wait "$MOE_CHILD" || rc=$?
        # wait returns >128 when a trapped signal interrupts it; keep waiting for the launcher.
        if ((rc > 128)) && kill -0 "$MOE_CHILD" 2>/dev/null; then continue; fi
        if ((rc > 128)) && [[ -n "$MOE_SIGNALLED" ]]; then
            local rc2=0
            wait "$MOE_CHILD" 2>/dev/null || rc2=$?
            [[ $rc2 != 127 ]] && rc=$rc2
        fi
        break
    done
    trap - USR1 TERM
    echo "$rc" >"$run_dir/slurm-exit-status"
    if [[ $rc == 0 && "$(stat -c %s "$run_dir/train.log" 2>/dev/null || echo -1)" == "$log_before" ]]; then
        moe_log "launcher exited 0 but the trainer never started (train.log unchanged): treating as preempted"
        rc=75
    fi
    if [[ $rc == 75 ]]; then
        local restarts=${SLURM_RESTART_COUNT:-0} max=${MAX_REQUEUES:-20}
        if [[ -z "${SLURM_JOB_ID:-}" ]]; then
            moe_log "trainer checkpointed and exited 75 (not under Slurm: no requeue)"
            return 75
        fi
        # SIGTERM means scancel, the time limit or Slurm's own preemption: checkpointed, but
        # not ours to requeue (a cancelled job must stay cancelled; PreemptMode=REQUEUE
        # requeues by itself). Only SIGUSR1 (to this shell or straight to the ranks) requeues.
        local state
        state=$(scontrol show job -o "$SLURM_JOB_ID" 2>/dev/null | tr ' ' '\n' | sed -n 's/^JobState=//p' | head -1)
        if [[ "$MOE_SIGNALLED" == TERM || "$state" =~ ^(CANCELLED|COMPLETING|TIMEOUT|PREEMPTED|DEADLINE) ]]; then
            moe_log "trainer checkpointed and exited 75 after SIGTERM (job state ${state:-unknown}): not requeueing; resubmit to continue"
            return 75
        fi
        if ((restarts >= max)); then
            moe_log "trainer exited 75 again after $restarts restarts (MAX_REQUEUES=$max): giving up"
            return 75
        fi
        moe_log "trainer checkpointed and exited 75: requeueing job $SLURM_JOB_ID (restart $((restarts + 1)))"
        if scontrol requeue "$SLURM_JOB_ID"; then
            return 0
        fi
        moe_log "scontrol requeue failed; exiting 75"
        return 75
    fi
    moe_log "trainer exited $rc"
    return "$rc"
}

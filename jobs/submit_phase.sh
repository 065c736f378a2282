#!/usr/bin/env bash
# Submit one phase of the ablation matrix: write the sweep, submit its job array (and, unless
# REFERENCE names an existing run, a reference run), and chain the gate job after them. The
# gate job decides continue/stop/promote, writes the next phase's sweep with --gate and calls
# this script again for it, up to MAX_PHASE.
#
#   SWEEP_DIR=sweeps/ablation BASE_CONFIG=jobs/configs/seed-reference.yaml PHASE=1 \
#     STEPS=1000 RANKS=8 ARRAY_PARALLEL=2 TIME=06:00:00 jobs/submit_phase.sh
#
# Prints  phase=P runs=N array_job=ID reference_job=ID|none gate_job=ID|none  and writes the same
# lines to SWEEP_DIR/phase-P/jobs.txt.
#
# Environment (defaults in brackets):
#   SWEEP_DIR        sweep directory [sweeps/ablation]
#   PHASE            1, 1b, 2 or 3 [1]
#   BASE_CONFIG      config the sweep varies [jobs/configs/seed-reference.yaml]
#   STEPS            step budget of every phase (moe-dist sweep --steps); STEPS_1, STEPS_1b,
#                    STEPS_2, STEPS_3 override it per phase [the sweep's own per-phase budgets]
#   GATE_JSON        previous phase's gate decisions (moe-dist sweep --gate); set by gate.sbatch
#   MAX_PHASE        last phase the chain submits [3]
#   RANKS            MPI ranks per run (sbatch --ntasks) [1]
#   CPUS_PER_RANK    cores per rank (--cpus-per-task; also OPENBLAS_NUM_THREADS) [1]
#   NODES            nodes per run (--nodes); keep an expert group inside a node [unset]
#   ARRAY_PARALLEL   at most K runs of the phase at once (--array=0-N%K) [unset: no limit]
#   TIME             time limit per run (--time), e.g. 06:00:00 [partition default]
#   SIGNAL_SECS      SIGUSR1 this many seconds before the time limit [120]
#   PARTITION, ACCOUNT, QOS   passed to sbatch when set
#   SBATCH_ARGS      extra sbatch arguments for every job (word-split)
#   REFERENCE        reference run directory for the gate; if unset, a reference run of
#                    BASE_CONFIG at the phase's step budget is trained alongside the array in
#                    SWEEP_DIR/runs/reference-phase-P
#   NO_SWEEP=1       runs.txt is already written: do not run moe-dist sweep
#   NO_GATE=1        submit the array (and reference) only
#   MOE_DIST         trainer binary [MOE_DIST_BIN, .build/release, .build/debug, PATH]
#   LAUNCHER, EXTRA_OVERRIDES, MAX_REQUEUES: see jobs/train.sbatch
set -euo pipefail

JOBS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export JOBS_DIR
export REPO_DIR=${REPO_DIR:-$(dirname "$JOBS_DIR")}
# shellcheck source=jobs/common.sh
source "$JOBS_DIR/common.sh"

abspath() { local p=$1; [[ "$p" == /* ]] || p=$PWD/$p; echo "$p"; }

SWEEP_DIR=$(abspath "${SWEEP_DIR:-sweeps/ablation}")
export SWEEP_DIR
export PHASE=${PHASE:-1}
BASE_CONFIG=$(abspath "${BASE_CONFIG:-$JOBS_DIR/configs/seed-reference.yaml}")
export BASE_CONFIG
export MAX_PHASE=${MAX_PHASE:-3}
RANKS=${RANKS:-1}
CPUS_PER_RANK=${CPUS_PER_RANK:-1}
SIGNAL_SECS=${SIGNAL_SECS:-120}
moe_phase_rank "$PHASE" >/dev/null
moe_phase_rank "$MAX_PHASE" >/dev/null
[[ -f "$BASE_CONFIG" ]] || moe_die "BASE_CONFIG not found: $BASE_CONFIG"
moe_resolve_binary
command -v sbatch >/dev/null || moe_die "sbatch not found (is Slurm installed and SLURM_CONF set?)"

phase_dir=$SWEEP_DIR/phase-$PHASE
runs_file=$phase_dir/runs.txt
log_dir=$SWEEP_DIR/logs/phase-$PHASE
mkdir -p "$SWEEP_DIR" "$log_dir"

# Step budget of this phase: STEPS_<phase>, else STEPS, else the sweep's default.
steps_var="STEPS_$PHASE"
phase_steps=${!steps_var:-${STEPS:-}}

# 1. The sweep.
if [[ "${NO_SWEEP:-0}" != 1 ]]; then
    sweep=("$MOE_DIST" sweep --phase "$PHASE" --base "$BASE_CONFIG" --out "$SWEEP_DIR")
    [[ -n "$phase_steps" ]] && sweep+=(--steps "$phase_steps")
    [[ -n "${GATE_JSON:-}" ]] && sweep+=(--gate "$(abspath "$GATE_JSON")")
    echo "+ ${sweep[*]}" >&2
    "${sweep[@]}" >&2
fi
[[ -f "$runs_file" ]] || moe_die "no $runs_file (did moe-dist sweep run?)"
n_runs=$(grep -c . "$runs_file" || true)
if ((n_runs == 0)); then
    echo "phase=$PHASE runs=0 array_job=none reference_job=none gate_job=none" | tee "$phase_dir/jobs.txt"
    echo "nothing to run in phase $PHASE (no configs in $runs_file)" >&2
    exit 0
fi

common=(--parsable --ntasks="$RANKS" --cpus-per-task="$CPUS_PER_RANK" --signal="B:USR1@$SIGNAL_SECS")
[[ -n "${NODES:-}" ]] && common+=(--nodes="$NODES")
[[ -n "${TIME:-}" ]] && common+=(--time="$TIME")
[[ -n "${PARTITION:-}" ]] && common+=(--partition="$PARTITION")
[[ -n "${ACCOUNT:-}" ]] && common+=(--account="$ACCOUNT")
[[ -n "${QOS:-}" ]] && common+=(--qos="$QOS")
# shellcheck disable=SC2206
extra=(${SBATCH_ARGS:-})
export OPENBLAS_NUM_THREADS=$CPUS_PER_RANK

# 2. The array: task i trains line i of runs.txt.
array="0-$((n_runs - 1))"
[[ -n "${ARRAY_PARALLEL:-}" ]] && array+="%$ARRAY_PARALLEL"
array_job=$(sbatch "${common[@]}" "${extra[@]}" --array="$array" --job-name="moe-p$PHASE" \
    --output="$log_dir/%A_%a.out" "$JOBS_DIR/phase.sbatch")
array_job=${array_job%%;*}
deps="afterok:$array_job"

# 3. The reference run, unless given.
reference_job=none
if [[ -n "${REFERENCE:-}" ]]; then
    gate_reference=$(abspath "$REFERENCE")
else
    gate_reference=$SWEEP_DIR/runs/reference-phase-$PHASE
    ref_steps=$phase_steps
    if [[ -z "$ref_steps" ]]; then
        # The sweep's budget for this phase, from the first config it wrote.
        first=$(head -1 "$runs_file")
        [[ "$first" == /* ]] || first=$phase_dir/$first
        ref_steps=$(sed -n 's/^[[:space:]]*max_steps:[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$first" 2>/dev/null | head -1)
    fi
    ref_args=()
    [[ -n "$ref_steps" ]] && ref_args+=("train.max_steps=$ref_steps")
    reference_job=$(CONFIG=$BASE_CONFIG RUN_DIR=$gate_reference sbatch "${common[@]}" "${extra[@]}" \
        --job-name="moe-ref-p$PHASE" --output="$log_dir/reference-%j.out" \
        "$JOBS_DIR/train.sbatch" "${ref_args[@]}")
    reference_job=${reference_job%%;*}
    deps+=":$reference_job"
fi

# 4. The gate job, after every task (and the reference) finished successfully. If one fails
#    the gate job is cancelled (--kill-on-invalid-dep) instead of pending forever.
gate_job=none
if [[ "${NO_GATE:-0}" != 1 ]]; then
    gate_job=$(GATE_REFERENCE=$gate_reference sbatch --parsable --ntasks=1 --cpus-per-task=1 \
        "${extra[@]}" ${PARTITION:+--partition="$PARTITION"} ${ACCOUNT:+--account="$ACCOUNT"} \
        ${QOS:+--qos="$QOS"} --dependency="$deps" --kill-on-invalid-dep=yes \
        --job-name="moe-gate-p$PHASE" --output="$log_dir/gate-%j.out" "$JOBS_DIR/gate.sbatch")
    gate_job=${gate_job%%;*}
fi

echo "phase=$PHASE runs=$n_runs array_job=$array_job reference_job=$reference_job gate_job=$gate_job" | tee "$phase_dir/jobs.txt"

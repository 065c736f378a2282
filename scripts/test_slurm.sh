#!/usr/bin/env bash
# The real Slurm test: a private one-node Slurm cluster (munged, slurmctld, slurmd started here
# and stopped here by pid) runs the job scripts of jobs/ end to end with the tiny config:
#   1. preemption: jobs/train.sbatch (2 ranks, srun --mpi=pmix) is sent SIGUSR1 (as Slurm does
#      before the time limit): the trainer checkpoints and exits 75 on both ranks, the job
#      requeues itself and resumes from that checkpoint to the end;
#   2. scancel: the trainer checkpoints on SIGTERM and the job is not requeued;
#   3. the ablation chain: jobs/submit_phase.sh writes the Phase 1 sweep (30 steps per run),
#      submits its array, a reference run and the gate job; each gate job writes gate.json, the
#      next phase's sweep (--gate) and submits that phase and its gate: 1 -> 1b -> 2 -> 3, up to
#      TEST_MAX_PHASE (default 3; the chain then ends by itself);
#   4. the routing ablations: sweep --ablation balancing and routers, each as a phase.sbatch array.
# Checks run dirs (final checkpoint, metrics.h5), job states, gate.json (a decision per run),
# and the chaining. Prints "N passed, N failed"; exits non-zero on any failure.
#
#   scripts/test_slurm.sh                   # uses $MOE_DIST_BIN or .build/debug/moe-dist
#   KEEP_TMP=1 scripts/test_slurm.sh        # keep the temp dir (logs) for a look afterwards
#
# Needs root (apt-get install slurm-wlm munge if missing; the daemons run as root) and 2 cores;
# the ablation runs use 1 rank each, OPENBLAS_NUM_THREADS=1. Bounded: TEST_TIMEOUT seconds (600) for the
# jobs. Takes about 1 minute.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
REPO=$PWD
TEST_TIMEOUT=${TEST_TIMEOUT:-600}
TEST_MAX_PHASE=${TEST_MAX_PHASE:-3}
STEPS=30
PASSED=0
FAILED=0

log() { echo "[test_slurm $(date -u +%H:%M:%S)] $*"; }
pass() { PASSED=$((PASSED + 1)); echo "PASS: $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $*"; }
check() { # check "description" command...
    local what=$1; shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
finish() {
    echo "$PASSED passed, $FAILED failed"
    [[ $FAILED == 0 ]] && exit 0 || exit 1
}

# ---------------------------------------------------------------- prerequisites
# shellcheck source=scripts/slurm/lib.sh
source "$REPO/scripts/slurm/lib.sh"
slurm_install_missing || { fail "apt-get install slurm-wlm munge"; finish; }
MOE_DIST_BIN=${MOE_DIST_BIN:-$REPO/.build/debug/moe-dist}
if [[ ! -x "$MOE_DIST_BIN" ]]; then
    log "building moe-dist (swift build)"
    swift build 2>&1 | tail -3
    MOE_DIST_BIN=$REPO/.build/debug/moe-dist
fi
[[ -x "$MOE_DIST_BIN" ]] || { fail "moe-dist binary at $MOE_DIST_BIN"; finish; }
export MOE_DIST=$MOE_DIST_BIN
export OPENBLAS_NUM_THREADS=1

# ---------------------------------------------------------------- the cluster
TMP=$(mktemp -d /tmp/moe-slurm-test.XXXXXX)
CLUSTER=$TMP/cluster
export SLURM_CONF=$CLUSTER/slurm.conf
cleanup() {
    local rc=$?
    if [[ -f "$SLURM_CONF" ]]; then
        scancel --quiet --full --user="$(id -un)" 2>/dev/null || true
        local end=$((SECONDS + 30))
        while ((SECONDS < end)) && [[ -n "$(squeue -h 2>/dev/null)" ]]; do sleep 1; done
    fi
    scripts/slurm/local_cluster.sh down "$CLUSTER" || true
    if [[ "${KEEP_TMP:-0}" == 1 ]]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "starting a one-node cluster in $CLUSTER"
if scripts/slurm/local_cluster.sh up "$CLUSTER"; then
    pass "cluster up: munged, slurmctld, slurmd running and node $(hostname -s) idle"
else
    fail "cluster up"
    tail -30 "$CLUSTER"/log/*.log 2>/dev/null
    finish
fi

DEADLINE=$((SECONDS + TEST_TIMEOUT))
job_field() { # job_field JOBID FIELD -> value from scontrol show job (first record)
    scontrol show job -o "$1" 2>/dev/null | head -1 | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1
}
wait_until() { # wait_until DESCRIPTION command...: poll until true or the test deadline
    local what=$1; shift
    while ((SECONDS < DEADLINE)); do "$@" && return 0; sleep 1; done
    log "timed out waiting for: $what"
    return 1
}
queue_empty() { [[ -z "$(squeue -h 2>/dev/null)" ]]; }

# ---------------------------------------------------------------- 1. preemption and requeue
log "preemption: train.sbatch, tiny, 2 ranks (srun --mpi=pmix), 600 steps; SIGUSR1 to the batch script mid-run"
PRE_RUN=$TMP/runs/preempt
pre_job=$(CONFIG=$REPO/jobs/configs/tiny.yaml RUN_DIR=$PRE_RUN JOBS_DIR=$REPO/jobs \
    sbatch --parsable --ntasks=2 --output="$TMP/preempt-%j.out" "$REPO/jobs/train.sbatch" \
    train.max_steps=600 train.micro_batch=4 train.checkpoint_interval=1000 train.eval_interval=500)
pre_job=${pre_job%%;*}
progress() { grep -q '^step [0-9]*0/600' "$PRE_RUN/train.log" 2>/dev/null; }
if wait_until "preempt job training" progress; then
    scancel --signal=USR1 --batch "$pre_job"
    requeued() { [[ "$(job_field "$pre_job" Restarts)" == 1 ]]; }
    if wait_until "requeue" requeued; then
        pass "SIGUSR1: the 2-rank trainer checkpointed and exited 75, job $pre_job requeued itself"
        # Slurm holds a requeued job for 2 minutes (BeginTime), which also gives slurmd time to
        # clean up the old attempt. Release it sooner: once it is pending with no step left,
        # plus a few seconds (a relaunch 1 s after the requeue can collide with the old step).
        pending_clean() { [[ "$(job_field "$pre_job" JobState)" == PENDING && -z "$(squeue -h -s -j "$pre_job" 2>/dev/null)" ]]; }
        wait_until "requeued job pending" pending_clean
        sleep 5
        scontrol update JobId="$pre_job" StartTime=now 2>/dev/null || true
    else
        fail "SIGUSR1: job $pre_job was not requeued (state $(job_field "$pre_job" JobState))"
    fi
    done_pre() { [[ "$(job_field "$pre_job" JobState)" =~ ^(COMPLETED|FAILED|CANCELLED|TIMEOUT)$ ]]; }
    wait_until "preempted job to finish" done_pre
    check "requeued job $pre_job completed (state $(job_field "$pre_job" JobState))" \
        test "$(job_field "$pre_job" JobState)" = COMPLETED
    check "second attempt resumed from the preemption checkpoint" \
        grep -q "resumed from .*checkpoints/step-" "$TMP/preempt-$pre_job.out"
    check "preempted run reached its final checkpoint step-00000600.h5" \
        test -f "$PRE_RUN/checkpoints/step-00000600.h5"
else
    fail "preemption job $pre_job never started training"
fi

# ---------------------------------------------------------------- 2. scancel: checkpoint, no requeue
log "scancel: the trainer checkpoints on SIGTERM and the job stays cancelled"
CAN_RUN=$TMP/runs/cancel
can_job=$(CONFIG=$REPO/jobs/configs/tiny.yaml RUN_DIR=$CAN_RUN JOBS_DIR=$REPO/jobs \
    sbatch --parsable --output="$TMP/cancel-%j.out" "$REPO/jobs/train.sbatch" \
    train.max_steps=1500 train.checkpoint_interval=1000 train.eval_interval=500)
can_job=${can_job%%;*}
can_progress() { grep -q '^step [0-9]*0/1500' "$CAN_RUN/train.log" 2>/dev/null; }
if wait_until "cancel job training" can_progress; then
    scancel "$can_job"
    can_done() { [[ "$(job_field "$can_job" JobState)" =~ ^(CANCELLED|COMPLETED|FAILED|PENDING)$ ]]; }
    wait_until "cancelled job to end" can_done
    sleep 2
    check "scancel: job $can_job CANCELLED and not requeued (state $(job_field "$can_job" JobState), restarts $(job_field "$can_job" Restarts))" \
        test "$(job_field "$can_job" JobState)" = CANCELLED -a "$(job_field "$can_job" Restarts)" = 0
    check "scancel: the trainer wrote a checkpoint on SIGTERM" grep -q "SIGTERM received" "$CAN_RUN/train.log" "$TMP/cancel-$can_job.out"
else
    fail "cancel job $can_job never started training"
fi

# ---------------------------------------------------------------- 3. the phase chain
SWEEP=$TMP/sweep
CKPT=step-$(printf %08d $STEPS).h5
PHASES=(1 1b 2 3)
case "$TEST_MAX_PHASE" in 1) NP=1 ;; 1b) NP=2 ;; 2) NP=3 ;; 3) NP=4 ;; *) fail "TEST_MAX_PHASE=$TEST_MAX_PHASE"; finish ;; esac
PHASES=("${PHASES[@]:0:NP}")
LAST=${PHASES[NP - 1]}
log "ablation chain: submit_phase.sh PHASE=1 STEPS=$STEPS MAX_PHASE=$LAST"
if out=$(SWEEP_DIR=$SWEEP PHASE=1 BASE_CONFIG=$REPO/jobs/configs/tiny.yaml STEPS=$STEPS MAX_PHASE=$LAST \
    RANKS=1 CPUS_PER_RANK=1 ARRAY_PARALLEL=2 jobs/submit_phase.sh 2>"$TMP/submit.err"); then
    echo "$out"
    check "submit_phase.sh printed array, reference and gate job ids" \
        grep -Eq 'array_job=[0-9]+ reference_job=[0-9]+ gate_job=[0-9]+' <<<"$out"
else
    cat "$TMP/submit.err"
    fail "jobs/submit_phase.sh PHASE=1"
    finish
fi

chain_done() { queue_empty && [[ -s "$SWEEP/phase-$LAST/next.txt" ]]; }
log "waiting for phases ${PHASES[*]} and their gates (at most $((DEADLINE - SECONDS)) s)"
wait_until "the chain to finish" chain_done || squeue

job_completed() { scontrol show job -o "$1" 2>/dev/null | grep -q 'JobState=COMPLETED'; }
run_completed() { # run_completed JOB RUN_DIR: job COMPLETED, final checkpoint, metrics.h5
    job_completed "$1" && test -f "$2/checkpoints/$CKPT" -a -s "$2/metrics.h5"
}
gate_ok() { # gate_ok GATE_JSON RUNS_TXT...: a decision for every run of the runs.txt files
    python3 - "$SWEEP/runs" "$@" <<'PY'
import json, os, sys
gate = json.load(open(sys.argv[2]))
configs = [l.strip() for f in sys.argv[3:] for l in open(f) if l.strip()]
want = {os.path.realpath(os.path.join(sys.argv[1], os.path.basename(c).rsplit(".", 1)[0])) for c in configs}
got = {os.path.realpath(r["run_dir"]): r["decision"] for r in gate["runs"]}
bad = [d for d in got.values() if d not in ("continue", "stop", "promote")]
missing = want - set(got)
if bad or missing or "reference" not in gate:
    print("gate.json:", {"bad decisions": bad, "runs without a decision": sorted(missing)}, file=sys.stderr)
    sys.exit(1)
print("gate decisions:", {os.path.basename(k): v for k, v in got.items()}, "best:", os.path.basename(gate.get("best") or ""))
PY
}

prev=""
for phase in "${PHASES[@]}"; do
    pdir=$SWEEP/phase-$phase
    jobs_line=$(cat "$pdir/jobs.txt" 2>/dev/null)
    array_job=$(sed -n 's/.*array_job=\([0-9]*\).*/\1/p' <<<"$jobs_line")
    ref_job=$(sed -n 's/.*reference_job=\([0-9]*\).*/\1/p' <<<"$jobs_line")
    gate_job=$(sed -n 's/.*gate_job=\([0-9]*\).*/\1/p' <<<"$jobs_line")
    if [[ -n "$prev" ]]; then
        check "phase $prev gate job submitted phase $phase (array $array_job, gate $gate_job) from a sweep with --gate" \
            grep -Eq "^phase=$phase runs=[1-9][0-9]* array_job=$array_job reference_job=[0-9]+ gate_job=$gate_job" "$SWEEP/phase-$prev/next.txt"
    fi
    n=$(grep -c . "$pdir/runs.txt" 2>/dev/null || echo 0)
    check "phase $phase: sweep wrote runs.txt ($n configs)" test "$n" -gt 0
    for ((i = 0; i < n; i++)); do
        name=$(basename "$(sed -n "$((i + 1))p" "$pdir/runs.txt")" .yaml)
        check "phase $phase task $i ($name): job ${array_job}_$i COMPLETED, $CKPT and metrics.h5" \
            run_completed "${array_job}_$i" "$SWEEP/runs/$name"
    done
    check "phase $phase reference run (job $ref_job) COMPLETED, $CKPT and metrics.h5" \
        run_completed "${ref_job:-none}" "$SWEEP/runs/reference-phase-$phase"
    check "phase $phase gate job $gate_job COMPLETED" job_completed "${gate_job:-none}"
    if [[ $phase == 1b ]]; then
        check "phase 1b gate.json has a decision for every run of phases 1 and 1b" \
            gate_ok "$pdir/gate.json" "$SWEEP/phase-1/runs.txt" "$pdir/runs.txt"
    else
        check "phase $phase gate.json has a decision for every run" gate_ok "$pdir/gate.json" "$pdir/runs.txt"
    fi
    prev=$phase
done
if [[ $LAST == 3 ]]; then
    check "chain ended after phase 3 ($(head -1 "$SWEEP/phase-3/next.txt" 2>/dev/null))" \
        grep -q '^stop: phase 3 is the last phase' "$SWEEP/phase-3/next.txt"
else
    check "chain stopped at MAX_PHASE=$LAST ($(head -1 "$SWEEP/phase-$LAST/next.txt" 2>/dev/null))" \
        grep -q "^stop: next phase .* is beyond MAX_PHASE=$LAST" "$SWEEP/phase-$LAST/next.txt"
fi

# ---------------------------------------------------------------- 4. the routing ablations as arrays
# moe-dist sweep --ablation balancing|routers, then phase.sbatch over its runs.txt (jobs/README.md).
ABL=$TMP/ablations
for ablation in balancing routers; do
    if "$MOE_DIST_BIN" sweep --ablation "$ablation" --base "$REPO/jobs/configs/tiny.yaml" --out "$ABL" --steps 20 \
        >"$TMP/sweep-$ablation.out" 2>&1; then
        runs=$ABL/ablation-$ablation/runs.txt
        n=$(grep -c . "$runs")
        job=$(SWEEP_DIR=$ABL RUNS_FILE=$runs sbatch --parsable --array=0-$((n - 1)) \
            --output="$TMP/abl-$ablation-%A_%a.out" "$REPO/jobs/phase.sbatch")
        check "sweep --ablation $ablation: $n runs submitted as array $job" test -n "$job" -a "$n" -eq 3
    else
        cat "$TMP/sweep-$ablation.out"; fail "moe-dist sweep --ablation $ablation"
    fi
done
wait_until "the ablation arrays" queue_empty
for name in bal-aux0.01 bal-bias bal-deepseek rt-shared rt-per-iteration rt-indexed; do
    check "ablation run $name finished (step-00000020.h5 and metrics.h5; token budget for routers)" \
        test -f "$ABL/runs/$name/checkpoints/step-00000020.h5" -a -s "$ABL/runs/$name/metrics.h5"
done
check "bal-bias and bal-deepseek record /experts/bias; rt-per-iteration has one router per iteration" python3 - "$ABL/runs" <<'PY'
import h5py, sys
root = sys.argv[1]
def experts(name): return h5py.File(f"{root}/{name}/metrics.h5", "r", locking=False)["experts"]
assert "bias" in experts("bal-bias") and "bias" in experts("bal-deepseek") and "bias" not in experts("bal-aux0.01")
assert "agreement" in experts("rt-per-iteration") and "agreement" not in experts("rt-indexed")
ck = h5py.File(f"{root}/rt-per-iteration/checkpoints/step-00000020.h5", "r")
assert "router" in ck["params/ffn/0"] and isinstance(ck["params/ffn/0/router"], h5py.Group), list(ck["params/ffn/0"])
PY

check "queue empty at the end" queue_empty

if ((FAILED > 0)); then
    log "job logs:"
    for f in "$TMP"/preempt-*.out "$SWEEP"/logs/*/*.out; do [[ -f "$f" ]] && { echo "== $f"; tail -15 "$f"; }; done
fi
finish

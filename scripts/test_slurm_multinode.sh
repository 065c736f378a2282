#!/usr/bin/env bash
# Multi-node Slurm on an emulated cluster (scripts/cluster.sh): 2 hosts node01 and node02, one
# slurmd on each (started inside its host's namespaces with -N <host>; %n in the spool, pid and log
# paths), slurmctld on node01 (the head node), one munged beside them (its socket is a file, which
# every host sees). Then, submitted from node01:
#   1. sbatch -N 2 jobs/train.sbatch (one rank per node) through srun --mpi=pmix, and
#   2. the same through mpirun (LAUNCHER=mpirun): each finishes its run on both nodes (the banner
#      says 2 ranks, the log of each node shows its rank), final checkpoint and metrics.h5;
#   3. the Phase chain: jobs/submit_phase.sh PHASE=1 NODES=2 RANKS=2 MAX_PHASE=1b: phase 1's array,
#      its reference run and its gate, which submits phase 1b and its gate; every run -N 2.
# Every daemon started here is stopped by its pid on every exit path, then the cluster is removed.
#
#   scripts/test_slurm_multinode.sh        # uses $MOE_DIST_BIN or .build/debug/moe-dist
#   KEEP_TMP=1 scripts/test_slurm_multinode.sh
#
# Needs root, the Debian packages slurm-wlm and munge (installed here when missing, as
# scripts/test_slurm.sh does), iproute2, mpirun. Prints "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
REPO=$PWD
TEST_TIMEOUT=${TEST_TIMEOUT:-600}
STEPS=20
PASSED=0
FAILED=0
log() { echo "[test_slurm_multinode $(date -u +%H:%M:%S)] $*"; }
pass() { PASSED=$((PASSED + 1)); echo "PASS: $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $*"; }
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; fi; }
finish() { echo "$PASSED passed, $FAILED failed"; [[ $FAILED == 0 ]] && exit 0 || exit 1; }

# shellcheck source=scripts/slurm/lib.sh
source "$REPO/scripts/slurm/lib.sh"
slurm_install_missing || { fail "apt-get install slurm-wlm munge"; finish; }
MOE_DIST_BIN=${MOE_DIST_BIN:-$REPO/.build/debug/moe-dist}
[[ -x "$MOE_DIST_BIN" ]] || { fail "moe-dist binary at $MOE_DIST_BIN (swift build first)"; finish; }
export MOE_DIST=$MOE_DIST_BIN
export OPENBLAS_NUM_THREADS=1

export MOE_CLUSTER=slm$$
MOE_CLUSTER=${MOE_CLUSTER:0:8}
CLUSTER=$REPO/scripts/cluster.sh
# Not under /tmp: each node gets a /tmp of its own (below), as real nodes do; this is the shared file system.
TMP=$(mktemp -d /var/tmp/moe-slurm-multinode.XXXXXX)
DIR=$TMP/slurm
export SLURM_CONF=$DIR/slurm.conf
NODES=(node01 node02)
PIDS=()           # every daemon started here: "name pid"

on() { "$CLUSTER" exec node01 "$@"; }   # a client command on the head node
cleanup() {
    local rc=$?
    if [[ -f $SLURM_CONF ]] && "$CLUSTER" status 2>/dev/null | grep -q node01; then
        on scancel --quiet --full --user=root 2>/dev/null || true
        local end=$((SECONDS + 20))
        while ((SECONDS < end)) && [[ -n $(on squeue -h 2>/dev/null) ]]; do sleep 1; done
    fi
    # slurmds first (they end their steps), then slurmctld, then munged: by the pids recorded here.
    local i name pid
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        read -r name pid <<<"${PIDS[i]}"
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    "$CLUSTER" down >/dev/null 2>&1 || true
    if [[ ${KEEP_TMP:-0} == 1 ]]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- the cluster
"$CLUSTER" up 2 >/dev/null || { fail "scripts/cluster.sh up 2"; finish; }
munged_start "$DIR" || { fail "munged did not start (see $DIR/log/munged.log)"; finish; }
PIDS+=("munged $MUNGED_PID")
mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.4}' /proc/meminfo)
cpus=$(nproc)
slurm_conf_write "$DIR" moedistmulti "node01(10.231.0.11)" 6817 6818 \
"NodeName=node01 NodeAddr=10.231.0.11 CPUs=$cpus RealMemory=$mem State=UNKNOWN
NodeName=node02 NodeAddr=10.231.0.12 CPUs=$cpus RealMemory=$mem State=UNKNOWN"
# cluster.sh exec replaces itself with the command, so $! is the daemon's pid.
"$CLUSTER" exec node01 slurmctld -D -i -f "$SLURM_CONF" >"$DIR/log/slurmctld.out" 2>&1 &
PIDS+=("slurmctld $!")
for n in "${NODES[@]}"; do
    mkdir -p "$DIR/spool/slurmd-$n"
    # `ip netns exec` mounts a fresh /sys in the host's private mount namespace, without the cgroup
    # hierarchies slurmd's cgroup plugin looks for: mount them again there (that namespace only). And a
    # node-local /tmp: slurmstepd's PMIx plugin makes /tmp/spmix_appdir_<uid>_<job>.<step> on every node.
    # The clone stays shared even when it lives under /tmp (as CI's does): it is bound aside first and
    # moved back onto the same path inside the node's /tmp.
    mkdir -p "$TMP/repo-aside-$n"
    # shellcheck disable=SC2016
    "$CLUSTER" exec "$n" env REPO="$REPO" ASIDE="$TMP/repo-aside-$n" sh -c 'keep_repo_through_tmp() {
            case "$REPO/" in /tmp/*) ;; *) mount -t tmpfs -o size=256m nodetmp /tmp; return;; esac
            mount --bind "$REPO" "$ASIDE" && mount -t tmpfs -o size=256m nodetmp /tmp &&
                mkdir -p "$REPO" && mount --move "$ASIDE" "$REPO"; }
        mount_cgroups() {
            if [ "$(stat -fc %T /proc/1/root/sys/fs/cgroup 2>/dev/null)" = cgroup2fs ]; then
                mount -t cgroup2 none /sys/fs/cgroup; return; fi
            mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup || return 1
            for c in cpuset memory freezer devices; do
                mkdir -p /sys/fs/cgroup/$c && mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c || return 1
            done
            mkdir -p /sys/fs/cgroup/systemd && mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd; }
        mount_cgroups && keep_repo_through_tmp && exec "$@"' slurmd \
        slurmd -D -N "$n" -f "$SLURM_CONF" >"$DIR/log/slurmd-$n.out" 2>&1 &
    PIDS+=("slurmd-$n $!")
done
both_idle() { [[ $(on sinfo -h -N -o '%N %t' 2>/dev/null | grep -c ' idle$') == 2 ]]; }
for _ in $(seq 1 120); do both_idle && break; sleep 0.5; done
if both_idle; then
    pass "cluster up: slurmctld on node01, slurmd on node01 and node02 (pids: ${PIDS[*]}), both nodes idle"
else
    on sinfo -N -l; tail -n 5 "$DIR"/log/*.log
    fail "the 2 nodes did not become idle"
    finish
fi

DEADLINE=$((SECONDS + TEST_TIMEOUT))
job_field() { on scontrol show job -o "$1" 2>/dev/null | head -1 | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
job_done() { [[ $(job_field "$1" JobState) =~ ^(COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY)$ ]]; }
wait_until() { local what=$1; shift; while ((SECONDS < DEADLINE)); do "$@" && return 0; sleep 1; done; log "timed out: $what"; return 1; }
queue_empty() { [[ -z $(on squeue -h 2>/dev/null) ]]; }

# ---------------------------------------------------------------- 1-2. train.sbatch -N 2
CKPT=step-$(printf %08d $STEPS).h5
for launcher in srun mpirun; do
    run=$TMP/runs/train-$launcher
    job=$(on env CONFIG="$REPO/jobs/configs/tiny.yaml" RUN_DIR="$run" JOBS_DIR="$REPO/jobs" LAUNCHER=$launcher \
        sbatch --parsable -N 2 --output="$TMP/train-$launcher-%j.out" "$REPO/jobs/train.sbatch" \
        train.max_steps=$STEPS train.checkpoint_interval=$STEPS train.eval_interval=1000)
    job=${job%%;*}
    log "train.sbatch -N 2 through $launcher: job $job"
    wait_until "job $job" job_done "$job"
    state=$(job_field "$job" JobState) nodes=$(job_field "$job" NodeList)
    check "$launcher: job $job on nodes $nodes ended $state, $CKPT and metrics.h5 written" \
        test "$state" = COMPLETED -a "$nodes" = "node[01-02]" -a -f "$run/checkpoints/$CKPT" -a -s "$run/metrics.h5"
    # Without --ntasks, one task per node on node[01-02]: a world of 2 ranks means one on each.
    check "$launcher: the run had 2 ranks ($(grep -m1 '^world:' "$run/train.log"))" grep -q "^world: 2 rank(s)" "$run/train.log"
    check "$launcher: the checkpoint was written by 2 ranks" \
        bash -c "'$MOE_DIST_BIN' ckpt inspect '$run/checkpoints/$CKPT' | grep -q 'written by 2 rank(s)'"
    [[ $state == COMPLETED ]] || tail -20 "$TMP/train-$launcher-$job.out"
done

# ---------------------------------------------------------------- 3. the Phase chain with -N 2
SWEEP=$TMP/sweep
log "Phase chain: submit_phase.sh PHASE=1 NODES=2 RANKS=2 STEPS=$STEPS MAX_PHASE=1b"
if out=$(on env SWEEP_DIR="$SWEEP" PHASE=1 BASE_CONFIG="$REPO/jobs/configs/tiny.yaml" STEPS=$STEPS MAX_PHASE=1b \
    RANKS=2 NODES=2 CPUS_PER_RANK=1 ARRAY_PARALLEL=1 SLURM_CONF="$SLURM_CONF" MOE_DIST="$MOE_DIST" \
    "$REPO/jobs/submit_phase.sh" 2>"$TMP/submit.err"); then
    echo "$out"
else
    cat "$TMP/submit.err"; fail "jobs/submit_phase.sh PHASE=1 NODES=2"; finish
fi
chain_done() { queue_empty && [[ -s $SWEEP/phase-1b/next.txt ]]; }
wait_until "the chain 1 -> 1b" chain_done || on squeue
for phase in 1 1b; do
    line=$(cat "$SWEEP/phase-$phase/jobs.txt" 2>/dev/null)
    array_job=$(sed -n 's/.*array_job=\([0-9]*\).*/\1/p' <<<"$line")
    gate_job=$(sed -n 's/.*gate_job=\([0-9]*\).*/\1/p' <<<"$line")
    n=$(grep -c . "$SWEEP/phase-$phase/runs.txt" 2>/dev/null || echo 0)
    ok=0
    for ((i = 0; i < n; i++)); do
        name=$(basename "$(sed -n "$((i + 1))p" "$SWEEP/phase-$phase/runs.txt")" .yaml)
        [[ $(job_field "${array_job}_$i" JobState) == COMPLETED && $(job_field "${array_job}_$i" NodeList) == "node[01-02]" \
            && -f $SWEEP/runs/$name/checkpoints/$CKPT ]] && ok=$((ok + 1))
    done
    check "phase $phase: $ok of $n runs COMPLETED on node[01-02] with $CKPT" test "$n" -gt 0 -a "$ok" = "$n"
    check "phase $phase: gate job $gate_job COMPLETED, gate.json written" \
        test "$(job_field "${gate_job:-none}" JobState)" = COMPLETED -a -s "$SWEEP/phase-$phase/gate.json"
done
check "phase 1's gate submitted phase 1b" grep -q "^phase=1b " "$SWEEP/phase-1/next.txt"
check "queue empty at the end" queue_empty
if ((FAILED > 0)); then for f in "$TMP"/*.out "$SWEEP"/logs/*/*.out; do [[ -f $f ]] && { echo "== $f"; tail -15 "$f"; }; done; fi
finish

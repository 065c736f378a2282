#!/usr/bin/env bash
# The failures a cluster really has, on real mpirun jobs (docs/cluster.md, "When a node hangs or is lost"):
#
#   hung       one rank SIGSTOPped on one host: parallel.collective_timeout fires within 3 s of its time
#              and ends the job with status 1 (within the timeout plus 12 s), the message names that rank and its host, no
#              process is left and every published checkpoint verifies.
#   hung-off   the same with parallel.collective_timeout=0: the job must still hang after the timeout
#              plus 12 s (the control that shows the check above can fail); the test then ends it.
#   hung-hosts the hung rank on the second of 2 emulated hosts (scripts/cluster.sh): the message names it.
#   lost       3 emulated hosts, one rank each; every process of the third host is killed (kill -9) in
#              the middle of a step: the job ends on every host within 30 s with no process left and no
#              partial checkpoint published; resubmitted on the 2 remaining hosts (--resume auto), it
#              continues from the newest checkpoint at world size 2; the history has no gap and no
#              duplicate row, and its losses after the resume equal, bit for bit, a resume of a copy of
#              the same checkpoint on the same 2 hosts with no node lost.
#
#   hung-bench one of 2 ranks SIGSTOPped while `bench` measures: the timeout ends it too, status 1.
#
#   scripts/test_cluster_failures.sh [hung|hung-off|hung-hosts|hung-bench|lost]...   (default: all five)
#
# Needs root (network namespaces), mpirun, python3 with h5py, and the binary (MOE_DIST_BIN, default
# .build/debug/moe-dist). Prints the measured times (stop -> job end, loss -> job end).
# MOE_FAILURE_TEST_KEEP=1 keeps the runs of a failed test. MOE_FAILURE_TEST_NO_TIMEOUT=1 runs `hung`, `hung-hosts` and `hung-bench` with the timeout off (they must then fail).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${MOE_DIST_BIN:-$ROOT/.build/debug/moe-dist}
[[ -x $BIN ]] || { echo "test_cluster_failures: no binary at $BIN (swift build first, or set MOE_DIST_BIN)" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "test_cluster_failures: mpirun is missing (scripts/setup.sh)" >&2; exit 1; }
python3 -c 'import h5py' || { echo "test_cluster_failures: python3 h5py is missing (scripts/setup.sh)" >&2; exit 1; }
export MOE_CLUSTER=${MOE_CLUSTER:-fail$$}
MOE_CLUSTER=${MOE_CLUSTER:0:8}
CLUSTER=$ROOT/scripts/cluster.sh
WORK=$(mktemp -d /tmp/moe-failures.XXXXXX)
TIMEOUT=5                      # parallel.collective_timeout of the hung tests (seconds)
MPIRUN=(mpirun --allow-run-as-root --oversubscribe)
CONFIG=(--config "$ROOT/jobs/configs/tiny.yaml" train.max_steps=100000 train.checkpoint_interval=10
        train.eval_interval=1000 train.global_batch=6)
JOB=""                         # the mpirun of the running job (its pid)
STOPPED=""                     # a rank this test stopped

cleanup() {
    local rc=$?
    [[ -n $STOPPED ]] && kill -CONT "$STOPPED" 2>/dev/null || true
    if [[ -n $JOB ]] && kill -0 "$JOB" 2>/dev/null; then
        local kids
        kids=$(pgrep -P "$JOB" || true)
        kill -TERM "$JOB" 2>/dev/null || true
        sleep 2
        kill -KILL "$JOB" $kids 2>/dev/null || true
    fi
    "$CLUSTER" down >/dev/null 2>&1 || true
    if [[ $rc != 0 && ${MOE_FAILURE_TEST_KEEP:-0} == 1 ]]; then echo "test_cluster_failures: kept $WORK" >&2; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "test_cluster_failures: FAIL: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(now)"; }

# The rank R process among PIDS (by the OMPI_COMM_WORLD_RANK of its environment).
rank_pid() {
    local r=$1 p
    shift
    for p in "$@"; do
        [[ $(tr '\0' '\n' </proc/"$p"/environ 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p') == "$r" ]] && { echo "$p"; return 0; }
    done
    return 1
}

# Waits (up to 240 s) for the job's checkpoint of STEP, or fails if the job ended first.
wait_checkpoint() {
    local dir=$1 step
    step=$(printf 'step-%08d.h5' "$2")
    for _ in $(seq 1 2400); do
        [[ -f $dir/checkpoints/$step ]] && return 0
        kill -0 "$JOB" 2>/dev/null || { cat "$dir"/../err*.txt >&2; fail "the job ended before its checkpoint $step"; }
        sleep 0.1
    done
    fail "no checkpoint $step after 240 s"
}

# Every published checkpoint of DIR verifies; prints the newest step.
verify_checkpoints() {
    local dir=$1 f newest=""
    for f in "$dir"/checkpoints/step-*.h5; do
        "$BIN" ckpt verify "$f" >/dev/null || fail "published checkpoint $f does not verify"
        newest=$f
    done
    [[ -n $newest ]] || fail "no checkpoint left in $dir"
    basename "$newest" .h5 | sed 's/step-0*//'
}

# A stopped rank 2 of 3, on one host or (cluster) on the second of 2 emulated hosts. NAME hung-off is
# the control: the job must still run after the bound.
hung() { # hung NAME TIMEOUT [cluster]
    local name=$1 timeout=$2 where=${3:-}
    local d=$WORK/$name
    mkdir -p "$d"
    cd "$d"
    local launch=("${MPIRUN[@]}") host
    if [[ $where == cluster ]]; then
        "$CLUSTER" up 2 >/dev/null
        "$CLUSTER" hostfile 1 2 >hosts
        # shellcheck disable=SC2207
        launch=("$CLUSTER" exec node01 "${MPIRUN[@]}" $("$CLUSTER" mpirun-args) --hostfile hosts)
        host=node02
    else
        host=$(hostname -s)
    fi
    "${launch[@]}" -np 3 "$BIN" train "${CONFIG[@]}" --run-dir "$d/run" parallel.collective_timeout="$timeout" \
        >out.txt 2>err.txt &
    JOB=$!
    wait_checkpoint "$d/run" 20
    local pids
    if [[ $where == cluster ]]; then pids=$(ip netns pids "$MOE_CLUSTER-h2"); else pids=$(pgrep -P "$JOB"); fi
    # shellcheck disable=SC2086
    STOPPED=$(rank_pid 2 $pids) || fail "$name: no rank 2 among the job's processes"
    kill -STOP "$STOPPED"
    local t0 rc=0
    t0=$(now)
    # The job's end: the timeout, the rest of a step, mpirun's tear-down (a few seconds across hosts).
    local bound=$((timeout > 0 ? timeout + 12 : TIMEOUT + 12))
    for _ in $(seq 1 $((bound * 10))); do kill -0 "$JOB" 2>/dev/null || break; sleep 0.1; done
    if [[ $name == hung-off ]]; then
        kill -0 "$JOB" 2>/dev/null || fail "$name: with parallel.collective_timeout=0 the job ended ($(since "$t0") s after the stop)"
        echo "$name: with the timeout off the job still waited $(since "$t0") s after rank 2 stopped (as it must); ending it"
        cleanup_job
        cd "$ROOT"
        return 0
    fi
    if kill -0 "$JOB" 2>/dev/null; then
        fail "$name: the job still runs $(since "$t0") s after rank 2 stopped (parallel.collective_timeout=$timeout)"
    fi
    wait "$JOB" || rc=$?
    local took
    took=$(since "$t0")
    JOB=""; STOPPED=""
    [[ $rc == 1 ]] || { cat err.txt >&2; fail "$name: exit status $rc, expected 1"; }
    grep -q "collective timeout: .* rank 2 (host $host) did not arrive" err.txt \
        || { cat err.txt >&2; fail "$name: no message naming rank 2 (host $host)"; }
    if [[ $where == cluster ]]; then
        for h in 1 2; do [[ -z $(ip netns pids "$MOE_CLUSTER-h$h") ]] || fail "$name: processes left on host $h"; done
        "$CLUSTER" down >/dev/null
    fi
    # The watchdog itself fired within 3 s of the timeout (its looks, and the two looks that tell who lives).
    local fired
    fired=$(grep -m1 -o 'has not finished after [0-9.]* s' err.txt | grep -o '[0-9.]*')
    python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= float(sys.argv[2]) + 3 else 1)" "$fired" "$timeout" \
        || fail "$name: the timeout fired after $fired s, more than 3 s past parallel.collective_timeout=$timeout"
    local left
    left=$(pgrep -f "$d/run" || true)
    [[ -z $left ]] || fail "$name: processes of the job left: $left"
    local newest
    newest=$(verify_checkpoints "$d/run")
    echo "$name: rank 2 stopped -> job ended in $took s (parallel.collective_timeout=$timeout), status 1, message:"
    grep -m1 "collective timeout" err.txt | sed 's/^/    /'
    echo "$name: every published checkpoint verifies (newest: step $newest)"
    cd "$ROOT"
}

# bench watches its collectives too: a rank stopped while `mpirun -np 2 bench` measures ends the job.
hung_bench() {
    local d=$WORK/hung-bench
    mkdir -p "$d"
    cd "$d"
    "${MPIRUN[@]}" -np 2 "$BIN" bench --config "$ROOT/jobs/configs/tiny.yaml" --steps 100000 \
        parallel.collective_timeout="$hung_timeout" >out.txt 2>err.txt &
    JOB=$!
    # Past the start-up (the watchdog is armed once the ranks agree on the configuration): its corpus line
    # says "done" when it was slow enough to be announced; then a moment into the measurement.
    for _ in $(seq 1 80); do grep -q "corpus.*done" err.txt && break; sleep 0.1; done
    for _ in $(seq 1 300); do grep -q "corpus.*done" err.txt && break; grep -q "corpus" err.txt || break; sleep 0.1; done
    sleep 3
    # shellcheck disable=SC2046
    STOPPED=$(rank_pid 1 $(pgrep -P "$JOB")) || fail "hung-bench: no rank 1 among the job's processes"
    kill -STOP "$STOPPED"
    local t0 rc=0 took
    t0=$(now)
    for _ in $(seq 1 $((TIMEOUT * 10 + 120))); do kill -0 "$JOB" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$JOB" 2>/dev/null; then
        fail "hung-bench: the job still runs $(since "$t0") s after rank 1 stopped"
        cleanup_job; cd "$ROOT"; return 0
    fi
    wait "$JOB" || rc=$?
    took=$(since "$t0")
    JOB=""; STOPPED=""
    [[ $rc == 1 ]] || { cat err.txt >&2; fail "hung-bench: exit status $rc, expected 1"; }
    grep -q "collective timeout: .* rank 1 (host .*) did not arrive" err.txt \
        || { cat err.txt >&2; fail "hung-bench: no message naming rank 1"; }
    echo "hung-bench: rank 1 stopped during bench -> job ended in $took s (parallel.collective_timeout=$hung_timeout), status $rc"
    cd "$ROOT"
}

# Ends the running job (the hung-off control): continue the stopped rank, then end mpirun.
cleanup_job() {
    kill -CONT "$STOPPED" 2>/dev/null || true
    local kids
    kids=$(pgrep -P "$JOB" || true)
    kill -TERM "$JOB" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$JOB" 2>/dev/null || break; sleep 0.1; done
    # shellcheck disable=SC2086
    kill -KILL "$JOB" $kids 2>/dev/null || true
    wait "$JOB" 2>/dev/null || true
    JOB=""; STOPPED=""
    "$CLUSTER" down >/dev/null 2>&1 || true
}

# The train/step and train/loss rows of a history.
history() { python3 - "$1" <<'EOF'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    for s, l in zip(f["train/step"][:], f["train/loss"][:]):
        print(int(s), repr(float(l)))
EOF
}

lost() {
    local d=$WORK/lost
    mkdir -p "$d"
    cd "$d"
    "$CLUSTER" up 3 >/dev/null
    "$CLUSTER" hostfile 1 1 1 >hosts3
    "$CLUSTER" hostfile 1 1 >hosts2
    local max=80
    local cfg=(--config "$ROOT/jobs/configs/tiny.yaml" train.max_steps=$max train.checkpoint_interval=20
               train.eval_interval=1000 train.global_batch=12 train.log_interval=10)
    # shellcheck disable=SC2207
    local args=($("$CLUSTER" mpirun-args))
    "$CLUSTER" exec node01 "${MPIRUN[@]}" "${args[@]}" --hostfile hosts3 -np 3 "$BIN" train "${cfg[@]}" \
        --run-dir "$d/run" >out1.txt 2>err1.txt &
    JOB=$!
    wait_checkpoint "$d/run" 40
    # In the middle of a step after step 50's log line (the next checkpoint, 60, is not written yet).
    for _ in $(seq 1 600); do grep -q "^step 50/" out1.txt && break; sleep 0.05; done
    grep -q "^step 50/" out1.txt || fail "lost: the job did not reach step 50"
    sleep 0.03
    local t0 rc=0
    "$CLUSTER" kill node03 KILL
    t0=$(now)
    for _ in $(seq 1 300); do kill -0 "$JOB" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$JOB" 2>/dev/null && fail "lost: the job still runs $(since "$t0") s after node03 was killed"
    wait "$JOB" || rc=$?
    local took
    took=$(since "$t0")
    JOB=""
    [[ $rc != 0 ]] || fail "lost: the job exited with status 0 after losing a node"
    sleep 1
    for h in 1 2 3; do
        [[ -z $(ip netns pids "$MOE_CLUSTER-h$h") ]] || fail "lost: processes left on host $h: $(ip netns pids "$MOE_CLUSTER-h$h" | tr '\n' ' ')"
    done
    local newest
    newest=$(verify_checkpoints "$d/run")
    echo "lost: node03 killed (kill -9, every process) after step 50 -> job ended on every host in $took s (status $rc); newest checkpoint: step $newest, every published one verifies"
    # The reference: the same checkpoint, resumed by 2 ranks on one host.
    cp -a "$d/run" "$d/ref"
    "$CLUSTER" exec node01 "${MPIRUN[@]}" "${args[@]}" --hostfile hosts2 -np 2 "$BIN" train "${cfg[@]}" \
        --run-dir "$d/run" --resume auto >out2.txt 2>err2.txt || { cat err2.txt >&2; fail "lost: the resubmission on 2 hosts failed"; }
    grep -q "resum.*step $newest\|step-0*$newest" out2.txt || { head -5 out2.txt >&2; fail "lost: the resubmission did not resume from step $newest"; }
    # The reference resumes the copy on the same 2 hosts, with no node lost: same transport, same
    # threads per rank (on one host 2 ranks would get 1 thread each, and the loss sums follow them).
    "$CLUSTER" exec node01 "${MPIRUN[@]}" "${args[@]}" --hostfile hosts2 -np 2 "$BIN" train "${cfg[@]}" \
        --run-dir "$d/ref" --resume auto >out3.txt 2>err3.txt || { cat err3.txt >&2; fail "lost: the reference resume failed"; }
    "$CLUSTER" down >/dev/null
    history "$d/run/metrics.h5" >hist.txt
    history "$d/ref/metrics.h5" >ref.txt
    local steps expected
    steps=$(cut -d' ' -f1 hist.txt | tr '\n' ' ')
    expected=$(seq 10 10 $max | tr '\n' ' ')
    [[ $steps == "$expected" ]] || fail "lost: history steps are '$steps', expected '$expected' (a gap or a duplicate row)"
    awk -v s="$newest" '$1 > s' hist.txt >after.txt
    awk -v s="$newest" '$1 > s' ref.txt >ref-after.txt
    [[ -s after.txt ]] || fail "lost: no history row after the resume"
    cmp -s after.txt ref-after.txt || { diff after.txt ref-after.txt >&2; fail "lost: losses after the resume differ from a clean resume of the same checkpoint"; }
    echo "lost: resumed on 2 hosts from step $newest: history steps $expected(no gap, no duplicate); losses of steps $(cut -d' ' -f1 after.txt | tr '\n' ' ')equal a clean 2-host resume of the same checkpoint bit for bit"
    cd "$ROOT"
}

tests=("$@")
((${#tests[@]})) || tests=(hung hung-off hung-hosts hung-bench lost)
hung_timeout=$TIMEOUT
[[ ${MOE_FAILURE_TEST_NO_TIMEOUT:-0} == 1 ]] && hung_timeout=0
for t in "${tests[@]}"; do
    case $t in
        hung) hung hung "$hung_timeout" ;;
        hung-off) hung hung-off 0 ;;
        hung-hosts) hung hung-hosts "$hung_timeout" cluster ;;
        hung-bench) hung_bench ;;
        lost) lost ;;
        *) fail "unknown test '$t' (hung, hung-off, hung-hosts, hung-bench, lost)" ;;
    esac
done
echo "test_cluster_failures: ${tests[*]}: passed"

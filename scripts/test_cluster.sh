#!/usr/bin/env bash
# Runs moe-dist across hosts of an emulated cluster (scripts/cluster.sh: network namespaces on a
# bridge, TCP only) and checks:
#   1. cross-host equality: `mpirun --hostfile` over 2 hosts (ranks 2+1) and 3 hosts (2+1+1, with
#      parallel.expert_parallel=2: two expert groups) gives the same history (metrics.h5, every dataset but
#      the timings) and final checkpoint, bit for bit, as the same world size on one host; and each
#      rank's thread count is its host's cores over the ranks on that host;
#   2. a run directory that one host does not share (a private tmpfs over it on node02) is refused
#      at start: exit status 2, a message naming the host, nothing trained; and a run directory that a
#      run on node01 holds is refused to a second train started on node02 (the lock across hosts);
#   3. slow links against `moe-dist estimate`: the all-to-all and all-reduce seconds per step that
#      `moe-dist bench` measures (medians of 5 steps) between 2 hosts on 2 Mbit/s links (tbf) are
#      within a factor (EST_FACTOR, default 2) of `estimate --link-gbps`'s projection;
#   4. docs/cluster.md's rehearsal on an emulated cluster, as written.
# Prints "N passed, N failed"; exits non-zero on any failure. Needs root, iproute2, Open MPI, python3
# with h5py and numpy. Takes about 6 minutes on 2 cores shared with other work (less alone).
#
#   scripts/test_cluster.sh                 # uses $MOE_DIST_BIN or .build/debug/moe-dist
#   KEEP_TMP=1 scripts/test_cluster.sh      # keep the run directories and logs
#   ONLY=equality|shared|estimate|docs scripts/test_cluster.sh
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
REPO=$PWD
PASSED=0
FAILED=0
# A cluster name of our own (a concurrent test or helper may run another cluster).
export MOE_CLUSTER=${MOE_CLUSTER:-c$$}
EST_FACTOR=${EST_FACTOR:-2}
ONLY=${ONLY:-}

log() { echo "[test_cluster $(date -u +%H:%M:%S)] $*"; }
pass() { PASSED=$((PASSED + 1)); echo "PASS: $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL: $*"; }
finish() {
    echo "test_cluster: $PASSED passed, $FAILED failed, $SECONDS s"
    [[ $FAILED == 0 ]] && exit 0 || exit 1
}
want() { [[ -z $ONLY || $ONLY == "$1" ]]; }

MOE_DIST_BIN=${MOE_DIST_BIN:-$REPO/.build/debug/moe-dist}
[[ -x $MOE_DIST_BIN ]] || { fail "moe-dist binary at $MOE_DIST_BIN (swift build, or set MOE_DIST_BIN)"; finish; }
for tool in ip tc unshare mpirun python3; do
    command -v "$tool" >/dev/null || { fail "$tool is needed"; finish; }
done
python3 -c "import h5py, numpy" 2>/dev/null || { fail "python3 with h5py and numpy is needed"; finish; }

TMP=$(mktemp -d /tmp/moe-cluster-test.XXXXXX)
cleanup() {
    local rc=$?
    scripts/cluster.sh down >/dev/null 2>&1 || true
    if [[ "${KEEP_TMP:-0}" == 1 ]]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

CORES=$(nproc)
MPI_LOCAL=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
# On the cluster: mpirun runs on node01 and reaches the other hosts through the rsh agent, TCP only.
cluster_mpirun() { # cluster_mpirun HOSTFILE NP ARGS...
    local hostfile=$1 np=$2
    shift 2
    # shellcheck disable=SC2046
    scripts/cluster.sh exec node01 "${MPI_LOCAL[@]}" $(scripts/cluster.sh mpirun-args) \
        --hostfile "$hostfile" -np "$np" "$@"
}

# Compares two runs' histories and final checkpoints, bit for bit; prints the figures.
compare_runs() { # compare_runs DIR_A DIR_B
    python3 - "$1" "$2" <<'EOF'
import glob, os, sys
import h5py, numpy as np
a, b = sys.argv[1:3]
TIMINGS = {"train/tokens_per_sec", "train/step_time"}   # wall-clock: differ between any two runs

def datasets(path):
    out = {}
    with h5py.File(path, "r", locking=False) as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out

def compare(fa, fb, skip=()):
    da, db = datasets(fa), datasets(fb)
    bad = [k for k in sorted(set(da) | set(db)) if k not in skip and
           (k not in da or k not in db or np.asarray(da[k]).shape != np.asarray(db[k]).shape
            or np.asarray(da[k]).tobytes() != np.asarray(db[k]).tobytes())]
    values = sum(np.asarray(v).size for k, v in da.items() if k not in skip)
    return da, db, bad, values

ma, mb, bad, n = compare(f"{a}/metrics.h5", f"{b}/metrics.h5", TIMINGS)
ca = sorted(glob.glob(f"{a}/checkpoints/step-*.h5"))[-1:]
cb = sorted(glob.glob(f"{b}/checkpoints/step-*.h5"))[-1:]
if not ca or not cb or os.path.basename(ca[0]) != os.path.basename(cb[0]):
    print(f"  final checkpoints differ in name: {ca} vs {cb}"); sys.exit(1)
_, _, bad_ck, n_ck = compare(ca[0], cb[0])
diff = 0.0
for k in ("train/loss", "eval/loss"):
    if k in ma and k in mb and ma[k].shape == mb[k].shape:
        diff = max(diff, float(np.max(np.abs(ma[k] - mb[k]))) if ma[k].size else 0.0)
print(f"  {len(ma['train/step'])} history rows ({n} values) and {os.path.basename(ca[0])} ({n_ck} values) compared; "
      f"final train loss {float(ma['train/loss'][-1])!r} vs {float(mb['train/loss'][-1])!r}, final eval loss "
      f"{float(ma['eval/loss'][-1])!r} vs {float(mb['eval/loss'][-1])!r}; max |loss difference| {diff:g}")
for k in bad + bad_ck:
    x, y = (ma, mb) if k in ma or k in mb else (None, None)
    print(f"  differs: {k}")
sys.exit(1 if bad or bad_ck else 0)
EOF
}

# The thread counts the banner reports against each host's cores over its ranks.
check_threads() { # check_threads LOG SLOTS...
    local log=$1
    shift
    local expected=() s i
    for s in "$@"; do
        local t=$((CORES / s))
        ((t < 1)) && t=1
        for ((i = 0; i < s; i++)); do expected+=("$t"); done
    done
    local want_line
    if [[ $(printf '%s\n' "${expected[@]}" | sort -u | wc -l) == 1 ]]; then
        want_line="${expected[0]} thread(s) per rank"
    else
        want_line="thread(s) per rank $(IFS=,; echo "${expected[*]}")"
    fi
    if grep -qF "$want_line" "$log"; then
        pass "threads per rank follow each host's ranks ($*: '$want_line')"
    else
        fail "threads per rank: expected '$want_line' in $log, got: $(grep -o 'BLAS:.*' "$log" | head -1)"
    fi
}

TRAIN=("$MOE_DIST_BIN" train --config jobs/configs/tiny.yaml train.max_steps=8 train.log_interval=2
       train.eval_interval=4 train.eval_tokens=256 train.checkpoint_interval=4)

# ---------------------------------------------------------------- 1. cross-host equality
equality_case() { # equality_case NAME "SLOTS..." OVERRIDES...
    local name=$1 slots=$2
    shift 2
    local -a s
    read -r -a s <<<"$slots"
    local np=0 x
    for x in "${s[@]}"; do np=$((np + x)); done
    scripts/cluster.sh hostfile "${s[@]}" >"$TMP/$name.hosts"
    log "$name: $np ranks over ${#s[@]} hosts (${slots// /+}) against $np ranks on one host"
    if ! cluster_mpirun "$TMP/$name.hosts" "$np" "${TRAIN[@]}" --run-dir "$TMP/$name-hosts" "$@" \
        >"$TMP/$name-hosts.log" 2>&1; then
        fail "$name: the cross-host run failed (tail of $TMP/$name-hosts.log):"
        tail -15 "$TMP/$name-hosts.log"
        return
    fi
    if ! "${MPI_LOCAL[@]}" -np "$np" "${TRAIN[@]}" --run-dir "$TMP/$name-local" "$@" >"$TMP/$name-local.log" 2>&1; then
        fail "$name: the one-host run failed (tail of $TMP/$name-local.log):"
        tail -15 "$TMP/$name-local.log"
        return
    fi
    # The ranks did run on the hosts of the hostfile (the rsh agent, TCP between namespaces).
    if compare_runs "$TMP/$name-hosts" "$TMP/$name-local"; then
        pass "$name: history and final checkpoint equal bit for bit ($np ranks over ${slots// /+} hosts vs one host)"
    else
        fail "$name: history or checkpoint differ between $np ranks over ${slots// /+} hosts and one host"
    fi
    check_threads "$TMP/$name-hosts.log" "${s[@]}"
}

if want equality; then
    scripts/cluster.sh up 3 >/dev/null || { fail "scripts/cluster.sh up 3"; finish; }
    # Every host of the cluster really is another host: its own name and address, reached over TCP.
    names=$(for h in node01 node02 node03; do scripts/cluster.sh exec "$h" hostname; done | tr '\n' ' ')
    [[ $names == "node01 node02 node03 " ]] && pass "hosts have their own names ($names)" || fail "host names: '$names'"
    equality_case two-hosts "2 1" train.global_batch=12
    equality_case three-hosts-ep2 "2 1 1" parallel.expert_parallel=2
    scripts/cluster.sh down
fi

# ---------------------------------------------------------------- 2. a run directory that is not shared
if want shared; then
    scripts/cluster.sh up 2 >/dev/null || { fail "scripts/cluster.sh up 2"; finish; }
    scripts/cluster.sh hostfile 1 1 >"$TMP/shared.hosts"
    mkdir -p "$TMP/scratch"
    log "a run directory that node02 sees as a private (node-local) directory"
    MOE_CLUSTER_PRIVATE="node02:$TMP/scratch" cluster_mpirun "$TMP/shared.hosts" 2 "${TRAIN[@]}" \
        --run-dir "$TMP/scratch/run" >"$TMP/shared.log" 2>&1
    rc=$?
    if [[ $rc == 2 ]] && grep -q "run directory $TMP/scratch/run is not shared: rank 1 on host node02" "$TMP/shared.log"; then
        pass "a run directory node02 does not share is refused (exit 2): $(grep -o 'run directory .*not shared[^.]*' "$TMP/shared.log" | head -1)"
    else
        fail "a run directory node02 does not share: exit status $rc (expected 2 and a message naming node02); tail:"
        tail -8 "$TMP/shared.log"
    fi
    if [[ -e $TMP/scratch/run/metrics.h5 || -d $TMP/scratch/run/checkpoints ]]; then
        fail "the refused run wrote to its run directory: $(ls -A "$TMP/scratch/run")"
    else
        pass "the refused run wrote no history or checkpoint"
    fi
    # The run-directory lock between hosts (O_EXCL on the shared file system, no flock): a run on node01
    # holds RUN_DIR; a second train of it on node02 is refused, naming node01 and the holder's pid.
    log "a second train of a run directory that a run on node01 holds, started on node02"
    scripts/cluster.sh exec node01 "${TRAIN[@]}" train.max_steps=1000000 --run-dir "$TMP/locked" \
        >"$TMP/lock-holder.log" 2>&1 &
    holder=$!
    for _ in $(seq 1 600); do [[ -s $TMP/locked/.moe-dist.lock ]] && break; sleep 0.1; done
    holder_pid=$(sed -n 's/^pid //p' "$TMP/locked/.moe-dist.lock" 2>/dev/null)
    scripts/cluster.sh exec node02 "${TRAIN[@]}" --run-dir "$TMP/locked" >"$TMP/lock-second.log" 2>&1
    rc=$?
    if [[ $rc == 2 && -n $holder_pid ]] && grep -q "is in use" "$TMP/lock-second.log" \
        && grep -q "host node01" "$TMP/lock-second.log" && grep -q "pid $holder_pid" "$TMP/lock-second.log"; then
        pass "a run directory held from node01 is refused on node02 (exit 2): $(grep -m1 'in use' "$TMP/lock-second.log")"
    else
        fail "a second train from node02 of a directory node01's run holds: exit status $rc (expected 2 naming host node01 and pid ${holder_pid:-?}); tail:"
        tail -5 "$TMP/lock-second.log"
    fi
    kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null
    scripts/cluster.sh down
fi

# ---------------------------------------------------------------- 3. slow links against estimate
# bench.yaml's shape made small for a debug build (~1 MB of all-to-all and ~0.7 MB of all-reduce per
# rank and step), measured between 2 hosts on links limited to 2 Mbit/s (tbf), medians over 5 steps:
# slow enough that the link, not the CPU the ranks get on a shared 2-core machine (up to ~2 s per step
# under load), sets the time. Each of the two must be within EST_FACTOR of `estimate --link-gbps`.
EST_CONFIG=(--config jobs/configs/bench.yaml model.d_model=128 model.n_heads=2 moe.d_ff=256 model.vocab_size=1024
            model.seq_len=64 model.depth=2)
EST_MBIT=${EST_MBIT:-2}
if want estimate; then
    scripts/cluster.sh up 2 --netem "rate ${EST_MBIT}mbit" >/dev/null || { fail "scripts/cluster.sh up 2 --netem 'rate ${EST_MBIT}mbit'"; finish; }
    scripts/cluster.sh hostfile 1 1 >"$TMP/est.hosts"
    gbps=$(python3 -c "print($EST_MBIT / 1000)")
    log "bench over 2 hosts, links limited to $EST_MBIT Mbit/s"
    if ! cluster_mpirun "$TMP/est.hosts" 2 -x OPENBLAS_NUM_THREADS=1 "$MOE_DIST_BIN" bench "${EST_CONFIG[@]}" \
        --warmup 1 --steps 5 --json >"$TMP/bench.json" 2>"$TMP/bench.err"; then
        fail "bench over ${EST_MBIT} Mbit/s links failed:"; tail -8 "$TMP/bench.err"
    elif ! "$MOE_DIST_BIN" estimate "${EST_CONFIG[@]}" --world 2 --link-gbps "$gbps" --ranks-per-node 1 --json \
            >"$TMP/estimate.json" 2>"$TMP/estimate.err"; then
        fail "estimate --link-gbps $gbps failed:"; cat "$TMP/estimate.err"
    elif python3 - "$TMP/bench.json" "$TMP/estimate.json" "$EST_MBIT" "$EST_FACTOR" <<'EOF'
import json, sys
bench, est = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
mbit, factor = sys.argv[3], float(sys.argv[4])
link = est["estimates"][0].get("link") or {}
ok = True
for kind, key in (("all-to-all", "all_to_all"), ("all-reduce", "all_reduce")):
    measured = bench["communication_median_seconds"][key]
    projected = link.get(f"{key}_seconds", 0.0)
    ratio = measured / projected if projected > 0 else float("inf")
    good = 1 / factor <= ratio <= factor
    ok &= good
    print(f"  {kind} on {mbit} Mbit/s links: measured {measured:.3f} s/step (median of {bench['steps']} steps), "
          f"projected {projected:.3f} s/step, measured/projected {ratio:.2f} ({'ok' if good else 'OUT OF BOUNDS'})")
sys.exit(0 if ok else 1)
EOF
    then pass "$EST_MBIT Mbit/s links: measured communication within ${EST_FACTOR}x of estimate's projection"
    else fail "$EST_MBIT Mbit/s links: measured communication not within ${EST_FACTOR}x of estimate's projection"; fi
    scripts/cluster.sh down
fi

# ---------------------------------------------------------------- 4. the documented rehearsal
# docs/cluster.md's emulated-cluster block(s) (the ones that bring a cluster up), as written, on a
# copy of the repository with moe-dist on PATH (as after the README's set-up).
if want docs; then
    copy=$TMP/docs-copy
    git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
        [[ -f $f ]] && mkdir -p "$copy/$(dirname "$f")" && cp -p "$f" "$copy/$f"
    done
    mkdir -p "$copy/.build/release" && ln -s "$MOE_DIST_BIN" "$copy/.build/release/moe-dist"
    python3 - docs/cluster.md >"$TMP/docs-blocks.sh" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
blocks = [b for b in re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M) if "scripts/cluster.sh up" in b]
print("\n".join(blocks))
EOF
    if [[ ! -s $TMP/docs-blocks.sh ]]; then
        fail "docs/cluster.md has no block that brings an emulated cluster up"
    else
        log "docs/cluster.md's rehearsal, as written: $(grep -c . "$TMP/docs-blocks.sh") lines"
        if (cd "$copy" && PATH="$copy/.build/release:$PATH" OPENBLAS_NUM_THREADS=1 \
            bash -c "set -euo pipefail; $(cat "$TMP/docs-blocks.sh")") >"$TMP/docs.log" 2>&1 \
            && [[ -f $copy/runs/tiny-two-hosts/metrics.h5 && -f $copy/runs/tiny-two-nodes/metrics.h5 ]]; then
            pass "docs/cluster.md's rehearsal runs as written (2+1 ranks on 2 hosts, hostfiles/two-nodes with 16 ranks)"
        else
            fail "docs/cluster.md's rehearsal (log $TMP/docs.log):"
            tail -15 "$TMP/docs.log"
        fi
    fi
    scripts/cluster.sh down >/dev/null 2>&1 || true
fi

finish

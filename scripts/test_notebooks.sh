#!/usr/bin/env bash
# Tests the analysis notebooks end to end: installs notebooks/requirements.txt if anything is
# missing, trains two tiny runs that differ in moe.aux_loss_coef and a tiny balancing ablation with
# 2 seeds per arm plus a per-iteration-router run, runs the moe_analysis pytest tests on them,
# executes notebooks/run_report.ipynb, ablations.ipynb, routing.ipynb and replicates.ipynb headless
# and checks that every expected figure was written (PNG > 5 KB). Exits non-zero on any failure.
#
#   scripts/test_notebooks.sh
#   MOE_DIST_BIN=.build/release/moe-dist scripts/test_notebooks.sh   # another binary
#   KEEP=1 scripts/test_notebooks.sh         # keep the runs, executed notebooks and figures
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
started=$SECONDS
fail() { echo "test_notebooks: FAIL: $*" >&2; exit 1; }

# 1. Python packages.
if ! python3 -c "import h5py, pandas, numpy, matplotlib, nbformat, nbclient, nbconvert, ipykernel, pytest" >/dev/null 2>&1; then
  echo "test_notebooks: installing Python packages (notebooks/requirements.txt)"
  python3 -m pip install -q --disable-pip-version-check -r notebooks/requirements.txt
fi
if ! python3 -m jupyter kernelspec list 2>/dev/null | grep -qw python3; then
  echo "test_notebooks: registering the python3 Jupyter kernel"
  python3 -m ipykernel install --user --name python3 >/dev/null
fi

# 2. The trainer.
bin="${MOE_DIST_BIN:-$repo/.build/debug/moe-dist}"
if [ ! -x "$bin" ] && [ -z "${MOE_DIST_BIN:-}" ]; then
  echo "test_notebooks: building moe-dist (debug)"
  swift build --product moe-dist 2>&1 | grep -Ev '^\[[0-9]+/[0-9]+\]' || true
fi
[ -x "$bin" ] || fail "no moe-dist binary at $bin (swift build, or set MOE_DIST_BIN)"
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
export MOE_DIST_BIN="$bin"

work="$(mktemp -d "${TMPDIR:-/tmp}/moe-notebooks.XXXXXX")"
if [ -z "${KEEP:-}" ]; then trap 'rm -rf "$work"' EXIT; else echo "test_notebooks: keeping $work"; fi
runs="$work/runs"

# 3. Two tiny runs, an aux_loss_coef ablation (same overrides as notebooks/tests/test_moe_analysis.py).
for aux in 0 0.02; do
  "$bin" train --config jobs/configs/tiny.yaml --run-dir "$runs/aux$aux" \
    train.max_steps=60 train.eval_interval=20 train.checkpoint_interval=30 "moe.aux_loss_coef=$aux" \
    >"$work/train-aux$aux.log" 2>&1 || { tail -20 "$work/train-aux$aux.log"; fail "training run aux$aux"; }
done
echo "test_notebooks: trained $runs/aux0 and $runs/aux0.02 ($((SECONDS - started)) s)"

# The balancing ablation with 2 seeds per arm (replicates) and one run with a router per iteration
# and the selection bias, 40 steps each (same as notebooks/tests/test_routing_replicates.py).
sweep="$work/sweep"
"$bin" sweep --ablation balancing --base jobs/configs/tiny.yaml --out "$sweep/configs" --steps 40 --seeds 2 \
  >"$work/sweep.log" 2>&1 || { cat "$work/sweep.log"; fail "moe-dist sweep --ablation balancing --seeds 2"; }
while read -r yaml; do
  name="$(basename "$yaml" .yaml)"
  "$bin" train --config "$yaml" --run-dir "$sweep/runs/$name" train.eval_interval=20 train.checkpoint_interval=40 \
    >"$work/train-$name.log" 2>&1 || { tail -20 "$work/train-$name.log"; fail "training run $name"; }
done <"$sweep/configs/ablation-balancing/runs.txt"
"$bin" train --config jobs/configs/tiny.yaml --run-dir "$sweep/runs/rt-per-iteration-bias" name=rt-per-iteration-bias \
  train.max_steps=40 moe.routers=per_iteration moe.router_bias_rate=0.001 train.eval_interval=20 train.checkpoint_interval=40 \
  >"$work/train-rt-per-iteration-bias.log" 2>&1 || { tail -20 "$work/train-rt-per-iteration-bias.log"; fail "training run rt-per-iteration-bias"; }
echo "test_notebooks: trained $(ls "$sweep/runs" | wc -l) sweep runs in $sweep/runs ($((SECONDS - started)) s)"

# A routing trace of 40 tokens of a generated-corpus token file through aux0's last checkpoint (routing_trace.ipynb).
python3 - "$work/route.tok" <<'PY'
import random, struct, sys
rng = random.Random(5); ids = [rng.randrange(256) for _ in range(40)]
with open(sys.argv[1], "wb") as fh:
    fh.write(b"MOETOKS1" + struct.pack("<IIQIQ", 1, 2, len(ids), 256, 0) + bytes(28) + struct.pack(f"<{len(ids)}H", *ids))
PY
for fmt in json h5; do
  out=(--json); [ "$fmt" = h5 ] && out=(--h5 "$work/route.h5")
  "$bin" route --checkpoint "$runs/aux0/checkpoints/step-00000060.h5" --data "$work/route.tok" --count 16 "${out[@]}" \
    >"$work/route.$fmt.out" 2>"$work/route.err" || { cat "$work/route.err"; fail "moe-dist route --$fmt"; }
done

# Gate decisions, if this build has the gate command (optional: the notebooks say when there are none).
# Written where the README's ablation steps put it (SWEEP/phase-1/gate.json beside SWEEP/runs), which is
# where the ablations notebook must find it by default.
gate_json="$work/phase-1/gate.json"
if "$bin" --help 2>&1 | grep -qE '^[[:space:]]+gate([[:space:]]|$)'; then
  mkdir -p "$work/phase-1"
  if "$bin" gate "$runs/aux0.02" --reference "$runs/aux0" --json >"$gate_json" 2>"$work/gate.err"; then
    echo "test_notebooks: gate decisions in $gate_json"
  else
    echo "test_notebooks: warning: moe-dist gate failed ($(tail -1 "$work/gate.err")); notebooks run without gate.json" >&2
    rm -f "$gate_json"
  fi
else
  echo "test_notebooks: no 'moe-dist gate' command in this build: notebooks run without gate.json"
fi

# 4. The helper's tests. pytest's own status counts (5 = no tests collected is a failure too),
#    and every test must run: skips here mean the runs or the binary were not found.
set +e
NOTEBOOK_TEST_RUNS="$runs" NOTEBOOK_TEST_SWEEP_RUNS="$sweep/runs" NOTEBOOK_TEST_ROUTE_H5="$work/route.h5" \
  NOTEBOOK_TEST_ROUTE_JSON="$work/route.json.out" python3 -m pytest -q -rs -p no:cacheprovider \
  notebooks/tests/test_moe_analysis.py notebooks/tests/test_routing_replicates.py notebooks/tests/test_route_trace.py \
  >"$work/pytest.log" 2>&1
status=$?
set -e
summary="$(grep -E '(passed|failed|error|skipped|no tests ran)' "$work/pytest.log" | tail -1)"
echo "test_notebooks: pytest: ${summary:-<no summary line>}"
if [ "$status" -ne 0 ]; then
  cat "$work/pytest.log"
  [ "$status" -eq 5 ] && fail "pytest collected no tests"
  fail "pytest exited with status $status"
fi
echo "$summary" | grep -qE '[0-9]+ passed' || { cat "$work/pytest.log"; fail "pytest reported no passed tests"; }
if echo "$summary" | grep -qE 'skipped|deselected|xfail'; then cat "$work/pytest.log"; fail "pytest skipped tests"; fi

# 5. The notebooks, headless.
# ablations is started from $work with relative paths, as a user would from a checkout.
execute() {  # notebook, directory to start from, then VAR=value environment
  local nb="$1" from="$2"; shift 2
  if ! (cd "$from" && env PWD="$from" "$@" python3 -m jupyter nbconvert --to notebook --execute "$repo/notebooks/$nb" \
        --output-dir "$work/executed" --ExecutePreprocessor.timeout=600) >"$work/$nb.log" 2>&1; then
    grep -v 'without encryption' "$work/$nb.log" | tail -40
    fail "executing $nb"
  fi
  echo "test_notebooks: executed $nb -> $work/executed/$nb ($((SECONDS - started)) s)"
}
execute run_report.ipynb "$repo" RUN_DIR="$runs/aux0" FIGURES_DIR="$work/figures/run" GATE_JSON="$gate_json"
execute ablations.ipynb "$work" RUNS_DIR=runs FIGURES_DIR=figures/ablations
if [ -f "$gate_json" ]; then   # the default search found the gate file (the notebook prints its path)
  grep -qF "$gate_json" "$work/executed/ablations.ipynb" || fail "ablations.ipynb did not find $gate_json"
fi
execute routing.ipynb "$work" RUNS_DIR=sweep/runs FIGURES_DIR=figures/routing
execute replicates.ipynb "$work" RUNS_DIR=sweep/runs FIGURES_DIR=figures/replicates
execute routing_trace.ipynb "$work" ROUTE_H5=route.h5 FIGURES_DIR=figures/route

# 6. Every expected figure, non-trivial.
check_figures() {  # directory, then names
  local dir="$1"; shift
  local name size
  for name in "$@"; do
    [ -f "$dir/$name.png" ] || fail "missing figure $dir/$name.png"
    size=$(stat -c %s "$dir/$name.png")
    [ "$size" -gt 5120 ] || fail "figure $dir/$name.png is only $size bytes"
  done
  echo "test_notebooks: $# figures OK in $dir"
}
check_figures "$work/figures/run" run_loss run_optim run_throughput run_expert_load_heatmap run_routing_health \
  run_token_drops run_final_load run_router_weights run_expert_norms
check_figures "$work/figures/ablations" ablation_eval_vs_step ablation_eval_vs_tokens ablation_train_loss \
  ablation_time_to_target ablation_tracking ablation_moe_health ablation_stability
[ -s "$work/figures/ablations/ablation_tracking.csv" ] || fail "missing ablation_tracking.csv"
# The tracking figure does not mislead: every bar panel starts at zero, every dot panel (an axis not
# from zero) has error bars, and the eval loss is a dot panel (its differences are small).
python3 - "$work/figures/ablations/ablation_tracking_axes.json" <<'PY' || fail "ablation_tracking axes"
import json, sys
facts = json.load(open(sys.argv[1]))
bad = [f for f in facts if (f["kind"] == "bars" and f["xmin"] != 0) or (f["kind"] == "dots" and not f["error_bars"])]
assert not bad, f"misleading panels: {bad}"
assert {"panel": "eval_loss", "kind": "dots"}.items() <= next(f for f in facts if f["panel"] == "eval_loss").items()
print(f"test_notebooks: tracking figure: {len(facts)} panels, bars from zero, dots with error bars")
PY

check_figures "$work/figures/routing" routing_agreement routing_bias routing_load_heatmap routing_iteration_max_load \
  routing_balance_vs_quality
check_figures "$work/figures/replicates" replicates_eval_curves replicates_train_curves replicates_tracking \
  replicates_noise_floor
check_figures "$work/figures/route" route_grid route_agreement route_entropy
[ -s "$work/figures/replicates/replicates_tracking.csv" ] || fail "missing replicates_tracking.csv"
# Honest axes: the load axis of the balancing view and every bar panel start at zero; the dot panels
# (eval loss and its difference, small numbers) carry error bars.
python3 - "$work/figures/routing/routing_balance_axes.json" "$work/figures/replicates/replicates_tracking_axes.json" <<'PY' \
  || fail "routing/replicates figure axes"
import json, sys
routing, tracking = (json.load(open(p)) for p in sys.argv[1:])
assert {f["panel"] for f in routing} == {"quality_vs_balance", "worst_vs_mean"}, routing
assert all(f.get("xmin", f.get("ymin")) == 0 and f["error_bars"] for f in routing), routing
bad = [f for f in tracking if (f["kind"] == "bars" and f["xmin"] != 0) or (f["kind"] == "dots" and not f["error_bars"])]
assert not bad, f"misleading panels: {bad}"
assert {"eval_loss", "delta_eval_loss"} <= {f["panel"] for f in tracking if f["kind"] == "dots"}, tracking
print(f"test_notebooks: routing/replicates figures: load axes from zero, dots with error bars")
PY

echo "test_notebooks: OK ($((SECONDS - started)) s)"

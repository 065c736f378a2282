#!/usr/bin/env bash
# Tests `moe-dist sample`, `route` and `export` against the PyTorch module (python/moe_dist_torch):
# installs torch, safetensors, tokenizers and pytest if missing (and FAILS if they cannot be had), trains a
# tiny model per architecture and routing variant on a small generated English corpus, then checks with
# pytest (python/tests/test_export.py) that
#   - model.safetensors loads with the safetensors package and holds the checkpoint's tensors exactly;
#   - the PyTorch loss on the validation tokens equals `moe-dist eval` within 1e-4, for every variant;
#   - PyTorch's greedy continuation equals `moe-dist sample --temperature 0` (past model.seq_len too);
#   - the experts and gates of `moe-dist route --json` equal PyTorch's routing;
# and that export refuses a damaged checkpoint (exit status 3, nothing written) and works from a
# checkpoint written by 2 ranks.
#
#   scripts/test_export.sh
#   MOE_DIST_BIN=.build/release/moe-dist KEEP=1 scripts/test_export.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
started=$SECONDS
fail() { echo "test_export: FAIL: $*" >&2; exit 1; }

# 1. Python packages: torch (CPU), safetensors, tokenizers, numpy, pytest, h5py.
have() { python3 -c "import torch, safetensors, tokenizers, numpy, pytest, h5py" >/dev/null 2>&1; }
if ! have; then
  echo "test_export: installing Python packages (python/moe_dist_torch/requirements.txt)"
  if ! python3 -c "import torch" >/dev/null 2>&1; then
    python3 -m pip install -q --disable-pip-version-check torch==2.13.0+cpu \
      || python3 -m pip install -q --disable-pip-version-check torch==2.13.0+cpu --extra-index-url https://download.pytorch.org/whl/cpu \
      || python3 -m pip install -q --disable-pip-version-check torch \
      || true
  fi
  python3 -m pip install -q --disable-pip-version-check -r python/moe_dist_torch/requirements.txt h5py || true
fi
have || fail "torch, safetensors, tokenizers, numpy, pytest and h5py are needed and could not be installed"

# 2. The binary.
bin="${MOE_DIST_BIN:-$repo/.build/debug/moe-dist}"
if [ ! -x "$bin" ] && [ -z "${MOE_DIST_BIN:-}" ]; then
  swift build --product moe-dist 2>&1 | grep -Ev '^\[[0-9]+/[0-9]+\]' || true
fi
[ -x "$bin" ] || fail "no moe-dist binary at $bin (swift build, or set MOE_DIST_BIN)"
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

work="$(mktemp -d "${TMPDIR:-/tmp}/moe-export.XXXXXX")"
if [ -z "${KEEP:-}" ]; then trap 'rm -rf "$work"' EXIT; else echo "test_export: keeping $work"; fi

# 3. Data: a small corpus, its tokenizer and token files.
python3 python/tests/make_corpus.py "$work"
"$bin" data prepare --train "$work/train.txt" --valid "$work/valid.txt" --vocab-size 320 --out "$work/data" >/dev/null 2>&1 \
  || fail "data prepare"

# 4. One tiny run per variant (jobs/configs/tiny.yaml: d 32, 4 heads, seq_len 16, depth 2, 8 experts).
variants=(
  "default|"
  "indexed|model.trunk=indexed moe.experts=indexed model.tie_embeddings=false model.depth_embedding=false"
  "swiglu-top1-capacity|moe.activation=swiglu moe.top_k=1 moe.capacity_factor=1.0"
  "sigmoid-bias|moe.router_score=sigmoid moe.router_bias_rate=0.01 moe.normalize_gates=false moe.top_k=3"
  "per-iteration-routers|moe.routers=per_iteration moe.router_bias_rate=0.01 model.depth=3 moe.aux_scope=sequence"
  "dense|moe.num_experts=0 moe.activation=swiglu model.trunk=indexed"
  "world-2|moe.z_loss_coef=0.01"
)
for v in "${variants[@]}"; do
  name="${v%%|*}"; overrides="${v#*|}"
  dir="$work/cases/$name"; mkdir -p "$dir"
  ranks=(); [ "$name" = world-2 ] && ranks=(--emulate-ranks 2)
  # shellcheck disable=SC2086
  "$bin" train --config jobs/configs/tiny.yaml --run-dir "$dir/run" "${ranks[@]}" train.max_steps=30 train.log_interval=10 \
    train.checkpoint_interval=30 train.eval_interval=30 data.train="$work/data/train.tok" data.valid="$work/data/valid.tok" \
    data.tokenizer="$work/data/tokenizer.json" $overrides >"$dir/train.log" 2>&1 || { cat "$dir/train.log"; fail "train $name"; }
  ck="$dir/run/checkpoints/step-00000030.h5"
  "$bin" eval --checkpoint "$ck" --data "$work/data/valid.tok" --max-tokens 2000 --json >"$dir/eval.json" 2>/dev/null || fail "eval $name"
  "$bin" export --checkpoint "$ck" --out "$dir/export" >/dev/null || fail "export $name"
  "$bin" sample --checkpoint "$ck" --prompt " The old king" --temperature 0 --max-new-tokens 40 --json >"$dir/sample.json" 2>/dev/null \
    || fail "sample $name"
  if [ "$name" != dense ]; then
    "$bin" route --checkpoint "$ck" --data "$work/data/valid.tok" --offset 100 --json >"$dir/route.json" || fail "route $name"
  fi
done

# 5. A damaged checkpoint is refused with exit status 3, and nothing is written.
ck="$work/cases/default/run/checkpoints/step-00000030.h5"
cp "$ck" "$work/damaged.h5"
python3 - "$work/damaged.h5" <<'PY'
import sys, h5py
path = sys.argv[1]
with h5py.File(path, "r") as f:
    ds = f["params/ffn/0/w1"]
    offset = ds.id.get_chunk_info(3).byte_offset  # expert 3's chunk
with open(path, "r+b") as fh:
    fh.seek(offset + 40); b = fh.read(1); fh.seek(offset + 40); fh.write(bytes([b[0] ^ 0xFF]))
PY
status=0; "$bin" export --checkpoint "$work/damaged.h5" --out "$work/damaged-export" 2>"$work/damaged.err" || status=$?
[ "$status" = 3 ] || fail "export of a damaged checkpoint: exit status $status, expected 3"
[ ! -e "$work/damaged-export" ] || fail "export of a damaged checkpoint wrote $work/damaged-export"
grep -q "damaged" "$work/damaged.err" || fail "export of a damaged checkpoint: the message does not say so: $(cat "$work/damaged.err")"

# 6. The PyTorch side.
OMP_NUM_THREADS=1 MOE_EXPORT_CASES="$work/cases" MOE_EXPORT_DATA="$work/data" python3 -m pytest -q -p no:cacheprovider python/tests/test_export.py \
  || fail "pytest python/tests/test_export.py"
cat "$work/cases/summary.txt"
echo "test_export: OK in $((SECONDS - started)) s"

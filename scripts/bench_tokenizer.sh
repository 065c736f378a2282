#!/usr/bin/env bash
# Byte-level BPE benchmark: moe-dist against Hugging Face `tokenizers` on the
# WikiText-2 train split (10.8 MB).
#
#   scripts/bench_tokenizer.sh            (VOCAB=8192 RUNS=3 by default)
#
# What is measured, and how it is kept fair:
#   - training: `moe-dist data prepare` (train split only as valid) reports its
#     training time (pre-token counting + merges); HF BpeTrainer with a ByteLevel
#     pre-tokenizer and the same vocabulary size, timed around `train()` only.
#   - encoding, single-threaded on both sides (RAYON_NUM_THREADS=1,
#     TOKENIZERS_PARALLELISM=false; moe-dist is single-threaded): moe-dist is timed
#     end to end as a process (start, tokenizer load, mmap, encode, write the token
#     file); HF is timed around the encode call only, inside Python, both as
#     encode_batch over the lines and as one encode of the whole text. Best of RUNS.
#     Both use the tokenizer.json moe-dist trained; the ids of the whole-text
#     encodings are compared.
#   - peak memory (max RSS) of the whole `prepare` run: /usr/bin/time -v if present,
#     else VmHWM polled from /proc.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DATA=${MOE_DIST_WIKITEXT2:-$ROOT/downloads/wikitext-2}   # the README's download step fills it
TRAIN=$DATA/wiki.train.tokens
VOCAB=${VOCAB:-8192}
RUNS=${RUNS:-3}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
export RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

[ -f "$TRAIN" ] || { echo "bench_tokenizer.sh: $TRAIN: not found (set MOE_DIST_WIKITEXT2)" >&2; exit 1; }
python3 -c 'import tokenizers' 2>/dev/null || { echo "bench_tokenizer.sh: python3 cannot import tokenizers (pip install tokenizers)" >&2; exit 1; }
(cd "$ROOT" && swift build -c release --product moe-dist >/dev/null)
BIN=$ROOT/.build/release/moe-dist
HF="python3 $ROOT/scripts/hf_tokenize.py"
BYTES=$(stat -c %s "$TRAIN")
now() { python3 -c 'import time; print(time.perf_counter())'; }

# Peak RSS in MB of a command, its stderr saved to $OUT/peak.err.
peak_mb() {
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -v "$@" >/dev/null 2>"$OUT/peak.err"
        awk '/Maximum resident set size/ {printf "%.1f", $NF/1024}' "$OUT/peak.err"
    else
        "$@" >/dev/null 2>"$OUT/peak.err" & local pid=$! hwm=0
        while kill -0 $pid 2>/dev/null; do
            local h; h=$(awk '/VmHWM/ {print $2}' /proc/$pid/status 2>/dev/null || true)
            [ -n "$h" ] && [ "$h" -gt "$hwm" ] && hwm=$h
            sleep 0.01
        done
        wait $pid
        awk -v k=$hwm 'BEGIN {printf "%.1f", k/1024}'
    fi
}

echo "== train: vocabulary $VOCAB on $TRAIN ($BYTES bytes)"
PEAK=$(peak_mb "$BIN" data prepare --train "$TRAIN" --valid "$TRAIN" --vocab-size "$VOCAB" --out "$OUT/ours")
OUR_TRAIN=$(sed -n 's/.*tokenizer: .* in \([0-9.]*\) s.*/\1/p' "$OUT/peak.err")
HF_TRAIN=$($HF train "$TRAIN" "$VOCAB" "$OUT/hf-trained.json")
echo "moe-dist training: ${OUR_TRAIN} s   HF BpeTrainer (1 thread): ${HF_TRAIN} s   peak RSS of prepare: ${PEAK} MB"

echo "== encode (single-threaded), best of $RUNS"
TOK=$OUT/ours/tokenizer.json
best_ours=999
for _ in $(seq "$RUNS"); do
    t0=$(now); "$BIN" data encode --tokenizer "$TOK" --input "$TRAIN" --out "$OUT/ours.tok" 2>/dev/null; t1=$(now)
    best_ours=$(python3 -c "print(min($best_ours, $t1 - $t0))")
done
best_lines=999; best_whole=999
for _ in $(seq "$RUNS"); do
    read -r _ tl nl tw nw < <($HF bench "$TOK" "$TRAIN")
    best_lines=$(python3 -c "print(min($best_lines, $tl))"); best_whole=$(python3 -c "print(min($best_whole, $tw))")
done
$HF encode "$TOK" "$TRAIN" "$OUT/hf.i32"
SAME=$(python3 - "$OUT/ours.tok" "$OUT/hf.i32" <<'PY'
import sys, array
ours = open(sys.argv[1], "rb").read()
bpt = int.from_bytes(ours[12:16], "little")
a = array.array("H" if bpt == 2 else "I"); a.frombytes(ours[64:])
b = array.array("i"); b.frombytes(open(sys.argv[2], "rb").read())
print("identical" if list(a) == list(b) else "DIFFERENT", len(a), "tokens")
PY
)
python3 - "$BYTES" "$best_ours" "$best_lines" "$best_whole" <<'PY'
import sys
n, ours, lines, whole = int(sys.argv[1]), *map(float, sys.argv[2:])
mb = n / 1e6
print(f"moe-dist data encode (whole process): {ours:7.3f} s  {mb/ours:7.1f} MB/s")
print(f"HF encode_batch(lines), 1 thread:     {lines:7.3f} s  {mb/lines:7.1f} MB/s   moe-dist is {lines/ours:.1f}x")
print(f"HF encode(whole text), 1 thread:      {whole:7.3f} s  {mb/whole:7.1f} MB/s   moe-dist is {whole/ours:.1f}x")
PY
echo "ids of the whole split, moe-dist vs HF: $SAME"

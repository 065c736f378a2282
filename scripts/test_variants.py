#!/usr/bin/env python3
"""Every architecture and routing variant of docs/configuration.md through the real command line.

Each row of ROWS below is one configuration; together the rows give every documented value of the
architecture and routing keys at least once (a covering design, not the cross product):

  dense model (moe.num_experts=0), model.trunk shared/indexed, moe.experts shared/indexed,
  moe.activation gelu/swiglu, moe.top_k 1/2/3, moe.capacity_factor 0 (dropless) and > 0 (with drops,
  checked in /experts/dropped), moe.router_score softmax/sigmoid, moe.router_bias_rate 0 and > 0,
  moe.aux_scope micro_batch/sequence, moe.routers per_pool/per_iteration, moe.normalize_gates
  true/false, moe.z_loss_coef 0 and > 0, model.tie_embeddings true/false, model.depth_embedding
  true/false, parallel.balance_experts true/false, parallel.expert_parallel = world and 1.

Every row runs at every launch mode (`-np 1`, `mpirun -np 2`, `--emulate-ranks 3`), so every value meets
every launch mode. At each launch a row goes through:
  1. `moe-dist train` for STEPS steps on token files made by `moe-dist data prepare` (checkpoint and
     evaluation at the last step);
  2. `moe-dist eval` of that checkpoint, same launch mode;
  3. `moe-dist train --resume auto --allow-config-change train.max_steps=STEPS+1`: one more step.
Expert products: the rows with shared expert pools (the only ones that run packed) alternate
MOE_DIST_EXPERT_PRODUCTS=blas / packed by (row + launch), so both meet every launch mode and every
cross-launch comparison of those rows also compares packed with BLAS; on a CPU without the packed
kernel (probed once: `MOE_DIST_EXPERT_PRODUCTS=packed` is refused with exit 2) every launch runs blas.

Checks (SPEC section 3, Invariance: same config, seed and data give the same losses at any world size up to
floating-point summation order; section 5: evaluation is dropless, so its result does not depend on the
batching or the world size):
  * every exit status is 0 and every loss finite;
  * per row, each launch's /train/loss (STEPS + 1 steps, the last one resumed), the in-training
    /eval/loss and the `eval` command's loss equal the `-np 1` launch's within a relative RTOL;
  * the `eval` command equals the in-training evaluation of the same checkpoint (same tokens) within RTOL;
  * rows with a capacity factor drop assignments (/experts/dropped > 0): the capacity path runs.
RTOL = 1e-5: the launches differ only in summation order (float32 partial sums over ranks, threads and
the packed/BLAS kernels), which moves a loss of ~6 by a few 1e-7 relative over a few steps.

Usage:
  scripts/test_variants.py                        # release binary, all launch modes
  MOE_DIST_BIN=.build-asan/debug/moe-dist scripts/test_variants.py --launches np1,np2
  scripts/test_variants.py --rows dense,indexed-drops --keep

The binary is $MOE_DIST_BIN (default .build/release/moe-dist); the script does not build it.
Prints one line per launch and the wall time; exits 1 on any failure, naming the row, launch and check.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3
RTOL = 1e-5
EVAL_TOKENS = 512

# Every run: jobs/configs/tiny.yaml (d 32, 4 heads, T 16, R 2, E 8, F 32) with a global batch of 6, which
# 1, 2 and 3 ranks divide (the micro-batch is fitted per world: 6, 3, 2 sequences per rank), so the global
# micro-batch, and with it the capacity and the aux statistics, is the same at every launch.
COMMON = ["train.global_batch=6", "train.micro_batch=6", "train.log_interval=1", "train.warmup_steps=2",
          f"train.eval_interval={STEPS}", f"train.checkpoint_interval={STEPS}", f"train.eval_tokens={EVAL_TOKENS}",
          "train.keep_checkpoints=3"]

# name -> overrides (keys left out keep their defaults: shared trunk and experts, gelu, top-2, dropless,
# softmax, no bias, micro_batch aux, per_pool routers, tied embeddings, depth embedding, normalized gates).
ROWS = {
    "dense": ["moe.num_experts=0", "model.trunk=indexed", "moe.activation=swiglu", "model.tie_embeddings=false"],
    "shared-top1": ["moe.top_k=1", "moe.aux_loss_coef=0.01"],
    "indexed-drops": ["model.trunk=indexed", "moe.experts=indexed", "moe.activation=swiglu", "moe.top_k=2",
                      "moe.capacity_factor=0.5", "moe.router_score=sigmoid", "moe.router_bias_rate=0.01",
                      "moe.aux_scope=sequence", "model.tie_embeddings=false", "model.depth_embedding=false",
                      "moe.normalize_gates=false", "moe.z_loss_coef=0.001"],
    "sigmoid-per-iteration-top3": ["moe.activation=swiglu", "moe.top_k=3", "moe.capacity_factor=1.0",
                                   "moe.router_score=sigmoid", "moe.router_bias_rate=0.01", "moe.aux_scope=sequence",
                                   "moe.routers=per_iteration", "model.depth_embedding=false",
                                   "parallel.balance_experts=false"],
    "softmax-bias-per-iteration": ["model.trunk=indexed", "moe.top_k=2", "moe.capacity_factor=0.75",
                                   "moe.router_bias_rate=0.01", "moe.routers=per_iteration",
                                   "model.tie_embeddings=false", "moe.z_loss_coef=0.001",
                                   "parallel.expert_parallel=1"],
}
LAUNCHES = ["np1", "np2", "emu3"]


class Failure(Exception):
    pass


def shared_experts(overrides):
    """Rows whose expert products may run packed (a shared expert pool; per-iteration pools keep BLAS)."""
    return "moe.num_experts=0" not in overrides and "moe.experts=indexed" not in overrides


def command(binary, launch, args, products):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MOE_DIST_EXPERT_PRODUCTS=products)
    if launch == "np1":
        return [binary] + args, env
    if launch == "np2":
        mpirun = shutil.which("mpirun") or sys.exit("test_variants: mpirun is not installed")
        exported = ["OPENBLAS_NUM_THREADS", "MOE_DIST_EXPERT_PRODUCTS"] + \
            [k for k in ("ASAN_OPTIONS", "LSAN_OPTIONS", "LD_PRELOAD") if k in env]
        return [mpirun, "--allow-run-as-root", "--oversubscribe", "-np", "2"] + \
            [y for k in exported for y in ("-x", k)] + [binary] + args, env
    if launch == "emu3":
        return [binary] + args + ["--emulate-ranks", "3"], env
    raise ValueError(launch)


def run(binary, launch, args, products, what, timeout):
    cmd, env = command(binary, launch, args, products)
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise Failure(f"{what}: exit status {p.returncode}\n  {' '.join(cmd)}\n{p.stdout[-2000:]}{p.stderr[-4000:]}")
    return p


def metrics(run_dir):
    import h5py
    with h5py.File(os.path.join(run_dir, "metrics.h5"), "r", locking=False) as f:
        out = {"train_loss": [float(x) for x in f["train/loss"][:]],
               "train_step": [int(x) for x in f["train/step"][:]],
               "eval_loss": [float(x) for x in f["eval/loss"][:]]}
        out["dropped"] = int(f["experts/dropped"][:].sum()) if "experts" in f and "dropped" in f["experts"] else 0
    return out


def prepare_data(binary, work, timeout):
    """Token files from the repository's own documentation, through `moe-dist data prepare`."""
    docs = sorted(os.path.join(REPO, "docs", n) for n in os.listdir(os.path.join(REPO, "docs")) if n.endswith(".md"))
    with open(os.path.join(work, "train.txt"), "w") as out:
        for path in docs:
            out.write(open(path, encoding="utf-8").read())
    shutil.copy(os.path.join(REPO, "README.md"), os.path.join(work, "valid.txt"))
    data = os.path.join(work, "data")
    p = subprocess.run([binary, "data", "prepare", "--train", os.path.join(work, "train.txt"), "--valid",
                        os.path.join(work, "valid.txt"), "--vocab-size", "320", "--out", data],
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        sys.exit(f"test_variants: data prepare failed ({p.returncode}):\n{p.stdout}{p.stderr}")
    return [f"data.train={data}/train.tok", f"data.valid={data}/valid.tok", f"data.tokenizer={data}/tokenizer.json"], \
        f"{data}/valid.tok"


def packed_available(binary, work, data_args, timeout):
    d = os.path.join(work, "probe")
    p = subprocess.run([binary, "train", "--config", os.path.join(REPO, "jobs/configs/tiny.yaml"), "--run-dir", d,
                        "train.max_steps=1", "train.eval_interval=1000"] + data_args,
                       env=dict(os.environ, MOE_DIST_EXPERT_PRODUCTS="packed", OPENBLAS_NUM_THREADS="1"),
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode == 0:
        return True
    if p.returncode == 2 and "MOE_DIST_EXPERT_PRODUCTS" in p.stderr:
        return False
    sys.exit(f"test_variants: probe of the packed kernel failed ({p.returncode}):\n{p.stdout}{p.stderr}")


def close(a, b):
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= RTOL * max(abs(a), abs(b))


def launch_row(binary, row, overrides, launch, products, work, data_args, valid_tok, timeout):
    d = os.path.join(work, f"{row}-{launch}")
    tiny = os.path.join(REPO, "jobs/configs/tiny.yaml")
    base = ["train", "--config", tiny, "--run-dir", d] + COMMON + data_args + overrides
    what = f"{row} at {launch} ({products})"
    p = run(binary, launch, base + [f"train.max_steps={STEPS}"], products, f"{what}: train", timeout)
    banner = p.stdout + p.stderr
    if shared_experts(overrides) and products == "packed" and "expert products: packed" not in banner:
        raise Failure(f"{what}: the banner does not say the packed kernel ran")
    if products == "blas" and "expert products: packed" in banner:
        raise Failure(f"{what}: MOE_DIST_EXPERT_PRODUCTS=blas, yet the banner says the packed kernel ran")
    ckpt = os.path.join(d, "checkpoints", f"step-{STEPS:08d}.h5")
    p = run(binary, launch, ["eval", "--checkpoint", ckpt, "--data", valid_tok, "--max-tokens", str(EVAL_TOKENS),
                             "--json"], products, f"{what}: eval", timeout)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if len(lines) != 1:
        raise Failure(f"{what}: eval printed {len(lines)} JSON lines:\n{p.stdout}")
    evaluated = json.loads(lines[0])["loss"]
    run(binary, launch, base + [f"train.max_steps={STEPS + 1}", "--resume", "auto", "--allow-config-change"], products, f"{what}: resume", timeout)
    m = metrics(d)
    if m["train_step"] != list(range(1, STEPS + 2)):
        raise Failure(f"{what}: /train/step is {m['train_step']}, expected 1 ... {STEPS + 1} (train, then one resumed step)")
    losses = m["train_loss"] + m["eval_loss"] + [evaluated]
    if not all(math.isfinite(x) for x in losses):
        raise Failure(f"{what}: a loss is not finite: {losses}")
    if not m["eval_loss"] or not close(evaluated, m["eval_loss"][0]):
        raise Failure(f"{what}: eval of the step-{STEPS} checkpoint gives {evaluated}, the training's evaluation {m['eval_loss']}")
    if any(o.startswith("moe.capacity_factor=") for o in overrides) and m["dropped"] == 0:
        raise Failure(f"{what}: a capacity factor is set but /experts/dropped is 0 (no drop was exercised)")
    return {"train": m["train_loss"], "eval": m["eval_loss"], "eval_cmd": evaluated, "dropped": m["dropped"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--launches", default=",".join(LAUNCHES), help="comma-separated subset of np1,np2,emu3")
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of: " + ", ".join(ROWS))
    ap.add_argument("--timeout", type=float, default=600, help="seconds per command")
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    a = ap.parse_args()
    binary = os.path.abspath(os.environ.get("MOE_DIST_BIN") or os.path.join(REPO, ".build/release/moe-dist"))
    if not os.access(binary, os.X_OK):
        sys.exit(f"test_variants: no moe-dist binary at {binary} (swift build -c release --product moe-dist, or set MOE_DIST_BIN)")
    launches = a.launches.split(",")
    rows = a.rows.split(",")
    for x in launches:
        if x not in LAUNCHES: sys.exit(f"test_variants: unknown launch {x} (np1, np2, emu3)")
    for x in rows:
        if x not in ROWS: sys.exit(f"test_variants: unknown row {x} ({', '.join(ROWS)})")
    started = time.time()
    work = tempfile.mkdtemp(prefix="moe-variants.")
    failures = []
    worst_seen = [0.0]      # largest relative difference between launches of one row
    try:
        data_args, valid_tok = prepare_data(binary, work, a.timeout)
        packed = packed_available(binary, work, data_args, a.timeout)
        print(f"test_variants: {binary}; {len(rows)} rows x {len(launches)} launches; expert products: "
              + ("blas and packed alternate" if packed else "blas only (this CPU has no packed kernel)"), flush=True)
        for i, row in enumerate(rows):
            overrides = ROWS[row]
            results = {}
            for launch in launches:
                li = LAUNCHES.index(launch)
                products = "packed" if packed and shared_experts(overrides) and (i + li) % 2 == 0 else "blas"
                t = time.time()
                try:
                    r = launch_row(binary, row, overrides, launch, products, work, data_args, valid_tok, a.timeout)
                except (Failure, subprocess.TimeoutExpired) as e:
                    failures.append(f"{row} at {launch}: {e}")
                    print(f"  FAIL {row:28s} {launch:5s} {products:6s} {e}", flush=True)
                    continue
                results[launch] = r
                print(f"  ok   {row:28s} {launch:5s} {products:6s} train {' '.join(f'{x:.6f}' for x in r['train'])}"
                      f" | eval {r['eval_cmd']:.6f} | dropped {r['dropped']} | {time.time() - t:.1f}s", flush=True)
            ref_launch = next((l for l in launches if l in results), None)
            for launch, r in results.items():
                if launch == ref_launch: continue
                ref = results[ref_launch]
                pairs = list(zip(ref["train"] + ref["eval"] + [ref["eval_cmd"]], r["train"] + r["eval"] + [r["eval_cmd"]]))
                worst = max(abs(x - y) / max(abs(x), 1e-30) for x, y in pairs)
                worst_seen[0] = max(worst_seen[0], worst)
                if len(r["train"]) != len(ref["train"]) or not all(close(x, y) for x, y in pairs):
                    failures.append(f"{row}: losses at {launch} differ from {ref_launch} by {worst:.2e} relative "
                                    f"(tolerance {RTOL:.0e}): {r} vs {ref}")
                    print(f"  FAIL {row}: {launch} vs {ref_launch}: relative difference {worst:.2e}", flush=True)
    finally:
        if a.keep: print(f"test_variants: kept {work}")
        else: shutil.rmtree(work, ignore_errors=True)
    print(f"test_variants: {len(rows) * len(launches)} launches, {len(failures)} failure(s), "
          f"largest difference between launches {worst_seen[0]:.1e} relative, {time.time() - started:.0f}s")
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

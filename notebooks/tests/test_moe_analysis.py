"""Tests of notebooks/moe_analysis.py on tiny moe-dist runs.

The runs come from NOTEBOOK_TEST_RUNS (a directory with the two runs `aux0` and `aux0.02`,
as scripts/test_notebooks.sh makes them) or are trained here with the moe-dist binary
(MOE_DIST_BIN, default .build/debug/moe-dist); without a binary the run-based tests skip.
"""
import json
import math
import os
import shutil
import subprocess
import sys
import time
import zlib

import h5py
import numpy as np
import pandas as pd
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "notebooks"))
import moe_analysis as ma  # noqa: E402

CONFIG = os.path.join(REPO, "jobs", "configs", "tiny.yaml")
# What the tiny runs use (scripts/test_notebooks.sh trains with the same overrides).
STEPS, LOG, EVAL, CKPT = 60, 10, 20, 30
OVERRIDES = [f"train.max_steps={STEPS}", f"train.eval_interval={EVAL}", f"train.checkpoint_interval={CKPT}"]
AUX = {"aux0": 0.0, "aux0.02": 0.02}


def binary():
    b = os.environ.get("MOE_DIST_BIN") or os.path.join(REPO, ".build", "debug", "moe-dist")
    return os.path.abspath(b)


def need_binary():
    if not os.access(binary(), os.X_OK):
        pytest.skip(f"moe-dist binary not found at {binary()} (build it with `swift build` or set MOE_DIST_BIN)")
    return binary()


def run_ok(cmd):
    """Runs cmd; fails the test with its output tails unless it exits 0."""
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return p


def train(run_dir, *overrides, wait=True):
    cmd = [need_binary(), "train", "--config", CONFIG, "--run-dir", str(run_dir), *OVERRIDES, *overrides]
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    run_ok(cmd)
    return run_dir


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory):
    given = os.environ.get("NOTEBOOK_TEST_RUNS")
    if given and all(os.path.exists(os.path.join(given, n, "metrics.h5")) for n in AUX):
        return given
    d = tmp_path_factory.mktemp("runs")
    for name, aux in AUX.items():
        train(d / name, f"moe.aux_loss_coef={aux}")
    return str(d)


@pytest.fixture(scope="session")
def runs(runs_dir):
    return ma.load_runs([os.path.join(runs_dir, n) for n in AUX])


@pytest.fixture(scope="session")
def run(runs):
    return runs[0]


def raw(run_dir):
    with h5py.File(os.path.join(run_dir, "metrics.h5"), "r", locking=False) as f:
        return {g: {k: d[()] for k, d in f[g].items()} for g in f}


# ---------------------------------------------------------------- tables from a run


def test_train_table(run):
    t = run.train
    assert len(t) == STEPS // LOG
    assert list(t.step) == list(range(LOG, STEPS + 1, LOG))
    for c in ma.TRAIN_COLUMNS + ["ppl", "wall_clock", "nan_new"]:
        assert c in t.columns, c
    tokens_per_step = run.flat_config["train.global_batch"] * run.flat_config["model.seq_len"]
    assert list(t.tokens) == [s * tokens_per_step for s in t.step]
    assert np.allclose(t.ppl, np.exp(t.ce))
    assert (np.diff(t.wall_clock) > 0).all() and (t.epoch.diff().dropna() > 0).all()
    assert t.nan_events.iloc[-1] == 0 and t.nan_new.sum() == t.nan_events.iloc[-1]


def test_eval_table(run):
    e = run.eval
    assert list(e.step) == list(range(EVAL, STEPS + 1, EVAL))
    assert np.allclose(e.ppl, np.exp(e.loss))
    assert (e.scored > 0).all()
    assert (np.diff(e.wall_clock) > 0).all()
    # interpolated on the train clock: the eval at the last step is the last train wall-clock
    assert math.isclose(e.wall_clock.iloc[-1], run.train.wall_clock.iloc[-1])


def test_expert_load_shapes_and_sums(run):
    R, E = run.iterations, run.num_experts
    S = STEPS // LOG
    el = run.expert_load
    assert list(el.columns) == ["step", "iteration", "expert", "count", "share", "load", "prob_mean"]
    assert len(el) == S * R * E
    m = raw(run.run_dir)["experts"]
    counts = m["counts"]
    assert counts.shape == (S, R, E)
    # the long table holds exactly the metrics' counts
    back = el.pivot_table(index=["step", "iteration"], columns="expert", values="count").to_numpy()
    assert np.array_equal(back.reshape(S, R, E), counts)
    assert el["count"].sum() == counts.sum()
    # each interval routes k assignments per token, per iteration
    k = run.flat_config["moe.top_k"]
    tokens_per_interval = run.flat_config["train.global_batch"] * run.flat_config["model.seq_len"] * LOG
    per = el.groupby(["step", "iteration"])["count"].sum()
    assert (per == k * tokens_per_interval).all()
    assert np.allclose(el.groupby(["step", "iteration"])["share"].sum(), 1.0)
    assert np.allclose(el.groupby(["step", "iteration"])["load"].mean(), 1.0)
    assert np.allclose(el.prob_mean.to_numpy(), m["prob_mean"].astype(np.float64).ravel())


def test_expert_summary_matches_metrics(run):
    R, E = run.iterations, run.num_experts
    es, el = run.expert_summary, run.expert_load
    m = raw(run.run_dir)["experts"]
    assert len(es) == (STEPS // LOG) * R
    assert np.allclose(es.entropy, m["entropy"].ravel())
    assert np.allclose(es.max_load, m["max_load"].ravel())
    assert np.allclose(es.min_load, m["min_load"].ravel())
    g = el.groupby(["step", "iteration"])
    assert np.allclose(g["load"].max().to_numpy(), es.max_load)
    assert np.allclose(g["load"].min().to_numpy(), es.min_load)
    ent = g["share"].apply(lambda s: -(s[s > 0] * np.log(s[s > 0])).sum() / math.log(E))
    assert np.allclose(ent.to_numpy(), es.entropy)
    assert (es.assignments == g["count"].sum().to_numpy()).all()
    assert (es.dropped == 0).all() and (es.drop_frac == 0).all()  # tiny is dropless
    assert ((es.top_expert >= 0) & (es.top_expert < E)).all()


# ---------------------------------------------------------------- config columns and many runs


def test_config_columns(runs):
    for r in runs:
        fc = r.flat_config
        for key in ("moe.aux_loss_coef", "moe.top_k", "moe.num_experts", "moe.d_ff", "moe.experts",
                    "model.depth", "train.max_steps", "parallel.expert_parallel"):
            assert key in fc, key
        assert fc["train.max_steps"] == STEPS
    assert sorted(r.flat_config["moe.aux_loss_coef"] for r in runs) == sorted(AUX.values())
    assert ma.differing_config(runs) == ["moe.aux_loss_coef"]
    tab = ma.runs_table(runs)
    assert len(tab) == 2 and {"run", "run_dir", "moe.aux_loss_coef", "moe.top_k", "last_step"} <= set(tab.columns)
    assert tab.groupby("moe.aux_loss_coef").ngroups == 2
    cat = ma.concat_runs(runs, "eval")
    assert len(cat) == sum(len(r.eval) for r in runs) and "moe.aux_loss_coef" in cat.columns
    # the checkpoint's config is the same resolved config
    info = ma.read_checkpoint_info(ma.newest_checkpoint(runs[0].run_dir))
    assert ma.flatten_config(info["config"]) == runs[0].flat_config


def test_load_runs_from_directory(runs_dir):
    found = ma.load_runs(runs_dir)
    assert sorted(r.name for r in found) == sorted(AUX)


def test_tracking_table_and_time_to_target(runs):
    target = max(r.eval.loss.min() for r in runs)
    tt = ma.tracking_table(runs, target_loss=target)
    assert len(tt) == 2
    for c in ("eval_loss", "eval_ppl", "tokens_per_sec", "wall_clock_to_target_s", "aux", "entropy",
              "max_load", "min_load", "top_share", "drop_frac", "grad_norm_max", "nan_events", "moe.aux_loss_coef"):
        assert c in tt.columns, c
    assert tt.wall_clock_to_target_s.notna().all()  # every run reaches the worst run's best loss
    r = runs[0]
    hit = ma.time_to_target(r, r.eval.loss.iloc[0] + 1.0)
    assert hit["step"] == r.eval.step.iloc[0]
    assert math.isnan(ma.time_to_target(r, -1.0)["step"])


def test_tracking_table_agrees_with_compare(runs):
    """The notebooks and `moe-dist compare` compute the tracking statistics by one definition
    (docs/statistics.md): two implementations, the same numbers (to float64 rounding)."""
    target = max(r.eval.loss.min() for r in runs)
    p = subprocess.run([need_binary(), "compare", "--json", "--target-loss", repr(float(target)),
                        *[r.run_dir for r in runs]], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    rows = {os.path.abspath(o["run_dir"]): o for o in json.loads(p.stdout)["runs"]}
    tt = ma.tracking_table(runs, target_loss=target)
    pairs = {"tokens_per_sec": "tokens_per_sec", "tokens_per_sec_q25": "tokens_per_sec_q25",
             "tokens_per_sec_q75": "tokens_per_sec_q75", "aux": "aux", "entropy": "entropy",
             "min_load": "min_load", "max_load": "max_load", "top_share": "top_expert_share",
             "top_expert": "top_expert", "drop_frac": "drop_fraction", "grad_norm": "grad_norm",
             "grad_norm_max": "max_grad_norm", "wall_clock_to_target_s": "seconds_to_target",
             "worst_iteration": "worst_iteration", "worst_iteration_max_load": "worst_iteration_max_load"}
    for r, (_, row) in zip(runs, tt.iterrows()):
        o = rows[os.path.abspath(r.run_dir)]
        for mine, theirs in pairs.items():
            assert o[theirs] is not None, theirs
            assert row[mine] == pytest.approx(o[theirs], rel=1e-9, abs=1e-12), f"{r.name}: {mine} {row[mine]} vs {theirs} {o[theirs]}"


def test_spread_summary_quartiles():
    s = ma.spread_summary([4, 1, 3, 2, float("nan")])       # linear interpolation, NaN left out
    assert (s["count"], s["median"], s["q25"], s["q75"]) == (4, 2.5, 1.75, 3.25)
    assert ma.spread_summary([])["count"] == 0


def test_name_is_not_an_ablation_axis(runs):
    import copy
    renamed = copy.copy(runs[1])
    renamed.flat_config = dict(runs[1].flat_config, name="another-name")
    assert "name" not in ma.differing_config([runs[0], renamed])


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_readers(run):
    ck = ma.newest_checkpoint(run.run_dir)
    assert ck.endswith(f"step-{STEPS:08d}.h5")
    E = run.num_experts
    pools = 1 if run.flat_config["moe.experts"] == "shared" else run.iterations
    rs = ma.router_stats(ck)
    assert len(rs) == pools * E and list(rs.expert[:E]) == list(range(E))
    wn = ma.expert_weight_norms(ck)
    tensors = {"w1", "w2"} | ({"w3"} if run.flat_config["moe.activation"] == "swiglu" else set())
    assert set(wn.tensor) == tensors | {"total"}
    assert len(wn) == pools * E * (len(tensors) + 1)
    with h5py.File(ck, "r", locking=False) as f:
        router = f["params/ffn/0/router"][()].astype(np.float64)
        w1 = f["params/ffn/0/w1"][()].astype(np.float64)
        w2 = f["params/ffn/0/w2"][()].astype(np.float64)
    assert np.allclose(rs[rs.pool == 0].norm, np.linalg.norm(router, axis=0))
    n1 = wn[(wn.pool == 0) & (wn.tensor == "w1")].norm.to_numpy()
    assert np.allclose(n1, np.sqrt((w1 ** 2).sum(axis=(1, 2))))
    tot = wn[(wn.pool == 0) & (wn.tensor == "total")].norm.to_numpy()
    assert np.allclose(tot ** 2, (w1 ** 2).sum(axis=(1, 2)) + (w2 ** 2).sum(axis=(1, 2)))


def test_a_damaged_json_attribute_is_refused(run, tmp_path):
    # moe-dist writes config (and loader) with a CRC-32 beside it; a changed value, as damage leaves it,
    # keeps the old CRC: the readers refuse it instead of returning another configuration.
    ck = tmp_path / "damaged.h5"
    shutil.copy(ma.newest_checkpoint(run.run_dir), ck)
    hist = tmp_path / "metrics.h5"
    _copy_history(run.run_dir, hist)
    for path in (ck, hist):
        with h5py.File(path, "a") as f:
            assert zlib.crc32(f.attrs["config"].encode()) == f.attrs["config_crc32"]
            changed = f.attrs["config"].replace('"lr": ', '"lr": 1', 1)
            assert changed != f.attrs["config"]
            f.attrs["config"] = changed
    with pytest.raises(ValueError, match="CRC-32"):
        ma.read_checkpoint_info(str(ck))
    with pytest.raises(OSError, match="CRC-32"):
        ma.read_metrics(str(hist), tries=1)


# ---------------------------------------------------------------- deduplication and live files


def test_dedupe_latest_wins():
    # a history that restarted at step 20 without truncating: the re-done rows win, the abandoned 30 goes
    df = pd.DataFrame({"step": [10, 20, 30, 20, 30, 40], "v": [1, 2, 3, 20, 30, 40]})
    out = ma.dedupe_steps(df)
    assert list(out.step) == [10, 20, 30, 40] and list(out.v) == [1, 20, 30, 40]
    df = pd.DataFrame({"step": [10, 20, 20, 30], "v": [1, 2, 22, 3]})
    assert list(ma.dedupe_steps(df).v) == [1, 22, 3]


def _copy_history(src, dst, train_rows=None, extra=None):
    """Writes a metrics.h5 like src's, with /train rows permuted/duplicated and optional extra rows."""
    m = raw(src)
    with h5py.File(dst, "w") as f:
        with h5py.File(os.path.join(src, "metrics.h5"), "r", locking=False) as s:
            for k, v in s.attrs.items():
                f.attrs[k] = v
        for g, cols in m.items():
            for k, a in cols.items():
                if g == "train" and train_rows is not None:
                    a = a[train_rows]
                if extra and (g, k) in extra:
                    a = np.concatenate([a, extra[(g, k)]])
                f.create_dataset(f"{g}/{k}", data=a, maxshape=(None,) + a.shape[1:], chunks=True)


def test_duplicate_steps_in_file(run, tmp_path):
    d = tmp_path / "dup"
    d.mkdir()
    # rows 0..3 then a "restart" that re-logs rows 2..5 (steps 30..60) with a marker loss
    rows = [0, 1, 2, 3, 2, 3, 4, 5]
    _copy_history(run.run_dir, d / "metrics.h5", train_rows=rows)
    with h5py.File(d / "metrics.h5", "a") as f:
        loss = f["train/loss"][()]
        loss[4:] += 100.0
        f["train/loss"][...] = loss
    t = ma.load_run(str(d)).train
    assert list(t.step) == list(range(LOG, STEPS + 1, LOG))
    assert (t.loss.iloc[2:] > 100).all() and (t.loss.iloc[:2] < 100).all()


def test_live_file_groups_cut_to_shortest(run, tmp_path):
    d = tmp_path / "live"
    d.mkdir()
    # what a reader can see mid-append: one dataset of a group a row longer than the others
    _copy_history(run.run_dir, d / "metrics.h5", extra={("train", "loss"): np.array([1.0]),
                                                        ("experts", "counts"): np.zeros((1, run.iterations, run.num_experts), np.int64)})
    m = ma.read_metrics(str(d))
    for g in ("train", "eval", "experts"):
        assert len({len(a) for a in m[g].values()}) == 1, g
    r = ma.load_run(str(d))
    assert len(r.train) == STEPS // LOG and len(r.expert_summary) == (STEPS // LOG) * run.iterations


def test_read_while_training(tmp_path):
    d = tmp_path / "live-run"
    p = train(d, "train.max_steps=300", "train.checkpoint_interval=100", wait=False)
    reads, seen = 0, set()
    try:
        deadline = time.time() + 900   # a safety stop only: a loaded shared machine trains 300 steps slowly
        while p.poll() is None and time.time() < deadline:
            if os.path.exists(d / "metrics.h5"):
                r = ma.load_run(str(d))
                # groups are appended one after the other: /experts may lag /train by a row
                n_exp = len(r.expert_summary) // r.iterations
                assert len(r.expert_summary) % r.iterations == 0 and n_exp in (len(r.train), len(r.train) - 1)
                assert len(r.expert_load) == len(r.expert_summary) * r.num_experts
                assert r.train.step.is_monotonic_increasing
                reads += 1
                seen.add(len(r.train))
            time.sleep(0.05)
    finally:
        if p.poll() is None:
            p.kill()
        p.wait()
    assert p.returncode == 0, p.stderr.read().decode()[-2000:]
    assert reads > 0
    assert len(ma.load_run(str(d)).train) == 30


def test_resumed_run_has_unique_steps(run, tmp_path):
    d = tmp_path / "resumed"
    train(d, "moe.aux_loss_coef=0.01")
    mid = os.path.join(d, "checkpoints", f"step-{CKPT:08d}.h5")
    assert os.path.exists(mid)
    p = subprocess.run([need_binary(), "train", "--config", CONFIG, "--run-dir", str(d), *OVERRIDES,
                        "moe.aux_loss_coef=0.01", "--resume", mid], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    r = ma.load_run(str(d))
    assert list(r.train.step) == list(range(LOG, STEPS + 1, LOG))
    assert r.eval.step.is_unique and r.expert_summary.groupby("iteration").step.apply(lambda s: s.is_unique).all()
    # the curves mark the resume: the trainer's log names the step it resumed at
    assert ma.resume_steps(str(d)) == [CKPT]
    assert ma.resume_steps(run.run_dir) == []


def test_config_changes_recorded_on_resume(tmp_path):
    d = tmp_path / "changed"
    train(d, "moe.aux_loss_coef=0.01")
    assert ma.load_run(str(d)).config_changes.empty
    mid = os.path.join(d, "checkpoints", f"step-{CKPT:08d}.h5")
    cmd = [need_binary(), "train", "--config", CONFIG, "--run-dir", str(d), *OVERRIDES, "moe.aux_loss_coef=0.05", "--resume", mid]
    refused = subprocess.run(cmd, capture_output=True, text=True)
    assert refused.returncode == 2 and "moe.aux_loss_coef 0.01 -> 0.05" in refused.stderr, refused.stderr
    p = subprocess.run(cmd + ["--allow-config-change"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    r = ma.load_run(str(d))
    assert r.flat_config["moe.aux_loss_coef"] == 0.01          # the configuration the run started with
    assert r.config_changes.to_dict("records") == [{"step": CKPT, "key": "moe.aux_loss_coef", "old": 0.01, "new": 0.05}]
    assert r.final_config["moe.aux_loss_coef"] == 0.05
    assert list(r.train.step) == list(range(LOG, STEPS + 1, LOG))


# ---------------------------------------------------------------- gate decisions


def test_gate_table(tmp_path, runs):
    assert ma.load_gate(str(tmp_path)) is None
    assert ma.gate_table(None).empty
    # the shape `moe-dist gate --json` prints: run_dir as given on its command line (here relative to
    # the directory holding the runs), name = the config name (the same for both runs)
    root = os.path.dirname(runs[0].run_dir)
    rel = [os.path.relpath(r.run_dir, root) for r in runs]
    gate = {"reference": rel[0],
            "runs": [{"run_dir": d, "name": "tiny", "decision": dec, "reason": "test", "eval_loss": 1.0,
                      "stop_clauses": [{"name": "no_improvement", "holds": False, "detail": ""}]}
                     for d, dec in zip(rel, ["continue", "promote"])],
            "promoted": [rel[1]], "best": rel[1]}
    (tmp_path / "gate.json").write_text(json.dumps(gate))
    g = ma.load_gate(str(tmp_path))
    assert g["_path"] == str(tmp_path / "gate.json")
    gt = ma.gate_table(g, runs, base=root)
    assert list(gt.decision) == ["continue", "promote"]
    assert list(gt.run) == [r.name for r in runs]
    assert list(gt.promoted) == [False, True] and list(gt.best) == [False, True] and list(gt.reference) == [True, False]
    assert gt.stop_clauses.iloc[0] == "no_improvement=no"
    # without the base, relative directories still match by their trailing components
    assert list(ma.gate_table(g, runs).run) == [r.name for r in runs]


def test_same_run_dir(tmp_path):
    d = tmp_path / "runs" / "aux0"
    d.mkdir(parents=True)
    assert ma.same_run_dir(str(d), str(d))
    assert ma.same_run_dir("runs/aux0", str(d), bases=[str(tmp_path)])
    assert ma.same_run_dir("aux0", str(d)) and ma.same_run_dir("runs/aux0", str(d))
    assert not ma.same_run_dir("other/aux0", str(d)) and not ma.same_run_dir("aux", str(d))
    assert not ma.same_run_dir("/elsewhere/runs/aux0", str(d)) and not ma.same_run_dir(None, str(d))


def test_resolve_path(tmp_path, monkeypatch):
    (tmp_path / "runs" / "x").mkdir(parents=True)
    monkeypatch.setenv("PWD", str(tmp_path))
    assert ma.resolve_path("runs/x") == str(tmp_path / "runs" / "x")       # against $PWD first
    assert ma.resolve_path("jobs/configs/tiny.yaml") == CONFIG            # then the repository root
    assert ma.resolve_path("new/figs") == str(tmp_path / "new" / "figs")  # not yet existing: under $PWD
    assert ma.resolve_path("/abs/path") == "/abs/path" and ma.resolve_path("") == ""


def test_stop_marker(run, tmp_path):
    # a run the stage gate stopped carries root attributes stopped_step / stopped_reason (moe-dist gate.*)
    d = tmp_path / "stopped"
    d.mkdir()
    _copy_history(run.run_dir, d / "metrics.h5")
    assert ma.load_run(str(d)).stopped_step is None
    with h5py.File(d / "metrics.h5", "a") as f:
        f.attrs["stopped_step"] = np.int64(40)
        f.attrs["stopped_reason"] = "plateau"
    r = ma.load_run(str(d))
    assert r.stopped_step == 40 and r.stopped_reason == "plateau"
    assert ma.tracking_table([r]).stopped_step.iloc[0] == 40


def test_find_gates_reads_where_the_readme_writes(tmp_path):
    """README and jobs/gate.sbatch write SWEEP/phase-N/gate.json next to SWEEP/runs: the ablations
    notebook's default finds them there (every phase, in order); RUNS_DIR/gate.json or GATE_JSON win."""
    runs = tmp_path / "s1" / "runs"
    runs.mkdir(parents=True)
    assert ma.find_gates(str(runs)) == []
    for phase, best in [("1b", "b"), ("1", "a")]:
        (tmp_path / "s1" / f"phase-{phase}").mkdir()
        (tmp_path / "s1" / f"phase-{phase}" / "gate.json").write_text(json.dumps({"best": best, "runs": []}))
    found = ma.find_gates(str(runs))
    assert [g["best"] for g in found] == ["a", "b"]
    assert [g["_path"] for g in found] == [str(tmp_path / "s1" / p / "gate.json") for p in ("phase-1", "phase-1b")]
    explicit = tmp_path / "s1" / "phase-1b" / "gate.json"
    assert [g["best"] for g in ma.find_gates(str(runs), str(explicit))] == ["b"]
    (runs / "gate.json").write_text(json.dumps({"best": "own", "runs": []}))
    assert [g["best"] for g in ma.find_gates(str(runs))] == ["own"]

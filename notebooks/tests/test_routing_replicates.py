"""Tests of the routing (issue 13) and replicate (issue 16) helpers of notebooks/moe_analysis.py.

The runs are the `balancing` ablation of `moe-dist sweep` on the tiny config with 2 seeds per arm
(bal-aux0.01, bal-bias, bal-deepseek, each -s1234 and -s1235) plus `rt-per-iteration-bias` (one
router per iteration over the shared pool, with the selection bias): from NOTEBOOK_TEST_SWEEP_RUNS
(as scripts/test_notebooks.sh trains them) or trained here with the moe-dist binary (MOE_DIST_BIN,
default .build/debug/moe-dist). Every expected value is computed independently from the raw
metrics.h5 datasets with h5py and numpy, or taken from `moe-dist compare --json`.
"""
import copy
import json
import math
import os
import sys

import h5py
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "notebooks"))
import moe_analysis as ma  # noqa: E402
from test_moe_analysis import need_binary, run_ok  # noqa: E402

CONFIG = os.path.join(REPO, "jobs", "configs", "tiny.yaml")
# scripts/test_notebooks.sh trains with the same budget and overrides.
STEPS, LOG, EVAL = 40, 10, 20
OVERRIDES = [f"train.eval_interval={EVAL}", f"train.checkpoint_interval={STEPS}"]
ARMS = ["bal-aux0.01", "bal-bias", "bal-deepseek"]
SEEDS = [1234, 1235]
PER_ITERATION = "rt-per-iteration-bias"
BIAS_RATE = 1e-3
NAMES = [f"{a}-s{s}" for a in ARMS for s in SEEDS] + [PER_ITERATION]


@pytest.fixture(scope="session")
def sweep_dir(tmp_path_factory):
    given = os.environ.get("NOTEBOOK_TEST_SWEEP_RUNS")
    if given and all(os.path.exists(os.path.join(given, n, "metrics.h5")) for n in NAMES):
        return given
    b = need_binary()
    d = tmp_path_factory.mktemp("sweep")
    run_ok([b, "sweep", "--ablation", "balancing", "--base", CONFIG, "--out", str(d / "cfg"), "--steps", str(STEPS),
          "--seeds", str(len(SEEDS))])
    for n in NAMES[:-1]:
        run_ok([b, "train", "--config", str(d / "cfg" / "ablation-balancing" / f"{n}.yaml"), "--run-dir", str(d / "runs" / n),
              *OVERRIDES])
    run_ok([b, "train", "--config", CONFIG, "--run-dir", str(d / "runs" / PER_ITERATION), f"name={PER_ITERATION}",
          f"train.max_steps={STEPS}", "moe.routers=per_iteration", f"moe.router_bias_rate={BIAS_RATE}", *OVERRIDES])
    return str(d / "runs")


@pytest.fixture(scope="session")
def sweep(sweep_dir):
    return {r.name: r for r in ma.load_runs([os.path.join(sweep_dir, n) for n in NAMES])}


def raw(run):
    with h5py.File(os.path.join(run.run_dir, "metrics.h5"), "r", locking=False) as f:
        return {g: {k: d[()] for k, d in f[g].items()} for g in f}


# ---------------------------------------------------------------- routing tables (issue 13)


def test_agreement_table_matches_h5py(sweep):
    for name, r in sweep.items():
        m = raw(r)["experts"]
        R = r.iterations
        assert m["agreement"].shape == (STEPS // LOG, R - 1), name          # shared pool, R > 1: SPEC shape
        ag = r.agreement
        assert list(ag.columns) == ["step", "iteration", "pair", "agreement"]
        back = ag.pivot(index="step", columns="iteration", values="agreement")
        assert list(back.index) == list(m["step"])
        assert np.array_equal(back.to_numpy(), m["agreement"])              # exact: no arithmetic in between
        assert set(ag["pair"]) == {f"{i}-{i + 1}" for i in range(R - 1)}
        assert ((ag["agreement"] >= 0) & (ag["agreement"] <= 1)).all()


def test_agreement_table_empty_without_dataset(sweep, tmp_path):
    # an indexed pool (or R = 1) has no /experts/agreement: an empty table, not an error
    r = sweep[NAMES[0]]
    m = ma.read_metrics(r.run_dir)
    del m["experts"]["agreement"]
    assert ma.agreement_table(m).empty and list(ma.agreement_table(m).columns) == ma.AGREEMENT_COLUMNS


def test_bias_table_matches_h5py(sweep):
    for name, r in sweep.items():
        m = raw(r)["experts"]
        rate = r.flat_config["moe.router_bias_rate"]
        if not rate:
            assert "bias" not in m and r.bias.empty, name                   # only with a bias rate
            continue
        Q = r.iterations if r.flat_config["moe.routers"] == "per_iteration" else 1
        E = r.num_experts
        assert m["bias"].shape == (STEPS // LOG, Q, E), name
        b = r.bias
        assert len(b) == (STEPS // LOG) * Q * E and sorted(b["router"].unique()) == list(range(Q))
        back = b.sort_values(["step", "router", "expert"])["bias"].to_numpy().reshape(-1, Q, E)
        assert np.array_equal(back, m["bias"].astype(np.float64))
        # the rule moves each bias by exactly ±γ (or 0) per step: never more than γ·steps between rows
        prev = np.vstack([np.zeros((1, Q, E)), m["bias"][:-1].astype(np.float64)])
        steps = np.diff(np.concatenate([[0], m["step"]]))[:, None, None]
        assert (np.abs(m["bias"] - prev) <= rate * steps * (1 + 1e-5)).all(), name
        assert np.abs(m["bias"]).max() > 0, name                              # the biases did move
    assert len(sweep[PER_ITERATION].bias["router"].unique()) == sweep[PER_ITERATION].iterations


def test_load_heatmaps_per_iteration_from_counts(sweep):
    for name, r in sweep.items():
        m = raw(r)["experts"]
        counts = m["counts"].astype(np.float64)                              # [S, R, E]
        E = counts.shape[2]
        expected = E * counts / counts.sum(axis=2, keepdims=True)
        steps, arr = ma.load_array(r)
        assert list(steps) == list(m["step"]) and arr.shape == counts.shape
        assert np.allclose(arr, expected, rtol=1e-12, atol=0)
        hm = ma.load_heatmaps(r)
        assert sorted(hm) == list(range(r.iterations))
        for it, h in hm.items():                                              # one panel per iteration, not averaged
            assert h.shape == (len(steps), E) and list(h.index) == list(m["step"])
            assert np.allclose(h.to_numpy(), expected[:, it, :], rtol=1e-12, atol=0)
            # the history's own max/min load of that iteration
            assert np.allclose(h.max(axis=1), m["max_load"][:, it], rtol=1e-6)
            assert np.allclose(h.min(axis=1), m["min_load"][:, it], rtol=1e-6)


def _worst_by_numpy(r):
    m = raw(r)
    ev = m["eval"]["step"]
    start = ev[-2] if len(ev) >= 2 else -np.inf
    rows = m["experts"]["step"] > start
    per = m["experts"]["max_load"][rows].astype(np.float64).mean(axis=0)    # [R]
    return int(np.argmax(per)), float(per.max()), per


def test_worst_iteration_max_load_against_numpy_and_compare(sweep):
    runs = list(sweep.values())
    p = run_ok([need_binary(), "compare", "--json", *[r.run_dir for r in runs]])
    rows = {os.path.abspath(o["run_dir"]): o for o in json.loads(p.stdout)["runs"]}
    tt = ma.tracking_table(runs)
    for r, (_, row) in zip(runs, tt.iterrows()):
        it, val, per = _worst_by_numpy(r)
        w = ma.worst_iteration_max_load(r)
        assert w["iteration"] == it and w["max_load"] == pytest.approx(val, rel=1e-12)
        assert val >= per.mean()                                               # the worst is never below the mean
        assert row["worst_iteration"] == it and row["worst_iteration_max_load"] == pytest.approx(val, rel=1e-12)
        o = rows[os.path.abspath(r.run_dir)]                                   # the same definition as compare
        assert o["worst_iteration"] == it, r.name
        assert o["worst_iteration_max_load"] == pytest.approx(val, rel=1e-9, abs=1e-12), r.name
        il = ma.iteration_load_table(r)
        assert np.allclose(il["max_load"], per) and list(il["worst"]) == [i == it for i in range(r.iterations)]


# ---------------------------------------------------------------- replicates (issue 16)


def test_group_replicates(sweep):
    runs = list(sweep.values())
    g = ma.group_replicates(runs)
    assert list(g) == ARMS + [PER_ITERATION]
    for a in ARMS:
        assert [r.name for r in g[a]] == [f"{a}-s{s}" for s in SEEDS]
        assert len({ma.arm_key(r) for r in g[a]}) == 1
        assert sorted(r.flat_config["train.seed"] for r in g[a]) == SEEDS      # distinct seeds, one arm
    assert len({ma.arm_key(m[0]) for m in g.values()}) == len(g)              # arms differ
    # a replicate with another key changed is another arm; the same label gets a suffix
    other = copy.copy(g[ARMS[0]][1])
    other.flat_config = dict(other.flat_config, **{"moe.aux_loss_coef": 0.5})
    g2 = ma.group_replicates([g[ARMS[0]][0], other])
    assert list(g2) == [ARMS[0], ARMS[0] + "#2"] and all(len(m) == 1 for m in g2.values())
    # data_seed is not an arm key either (--vary data)
    ds = copy.copy(g[ARMS[0]][1])
    ds.flat_config = dict(ds.flat_config, **{"train.data_seed": 99})
    assert ma.arm_key(ds) == ma.arm_key(g[ARMS[0]][0])


def test_arm_curves_and_noise_floor_against_numpy(sweep):
    runs = list(sweep.values())
    c = ma.arm_curves(runs, "eval", "loss", "step")
    nf = ma.noise_floor(runs)
    assert set(nf["arm"]) == set(ARMS)                                         # arms of one run have no floor
    for a in ARMS:
        losses = np.array([raw(sweep[f"{a}-s{s}"])["eval"]["loss"] for s in SEEDS])    # [n, evals]
        steps = raw(sweep[f"{a}-s{SEEDS[0]}"])["eval"]["step"]
        d = c[c["arm"] == a]
        assert list(d["step"]) == list(steps) and (d["n"] == len(SEEDS)).all()
        assert np.allclose(d["mean"], losses.mean(axis=0), rtol=1e-12)
        sd = np.sqrt(((losses - losses.mean(axis=0)) ** 2).sum(axis=0) / (len(SEEDS) - 1))
        assert np.allclose(d["sd"], sd, rtol=1e-9)
        assert np.allclose(d["se"], sd / math.sqrt(len(SEEDS)), rtol=1e-9)
        assert np.allclose(d["min"], losses.min(axis=0)) and np.allclose(d["max"], losses.max(axis=0))
        assert np.allclose(nf[nf["arm"] == a]["sd"], sd, rtol=1e-9)
        assert (sd > 0).all()                                                  # seeds do differ
    single = c[c["arm"] == PER_ITERATION]
    assert (single["n"] == 1).all() and single["sd"].isna().all()


def test_arm_curves_only_at_common_steps(sweep):
    a, b = (copy.copy(sweep[f"{ARMS[0]}-s{s}"]) for s in SEEDS)
    b.eval = b.eval[b.eval["step"] < STEPS]                                   # one replicate stopped early
    c = ma.arm_curves([a, b])
    assert list(c["step"]) == list(b.eval["step"]) and (c["n"] == 2).all()


def test_arm_tracking_table_against_numpy(sweep):
    runs = list(sweep.values())
    at = ma.arm_tracking_table(runs, reference=ARMS[0]).set_index("arm")
    assert list(at.index) == ARMS + [PER_ITERATION]
    assert (at["eval_step"] == STEPS).all()
    stats = {}
    for a in ARMS:
        v = np.array([raw(sweep[f"{a}-s{s}"])["eval"]["loss"][-1] for s in SEEDS])
        w = np.array([_worst_by_numpy(sweep[f"{a}-s{s}"])[1] for s in SEEDS])
        stats[a] = (v.mean(), v.std(ddof=1), len(v))
        assert at.loc[a, "n"] == len(SEEDS)
        assert at.loc[a, "eval_loss"] == pytest.approx(v.mean(), rel=1e-12)
        assert at.loc[a, "eval_loss_sd"] == pytest.approx(v.std(ddof=1), rel=1e-9)
        assert at.loc[a, "eval_loss_se"] == pytest.approx(v.std(ddof=1) / math.sqrt(len(v)), rel=1e-9)
        assert at.loc[a, "worst_iteration_max_load"] == pytest.approx(w.mean(), rel=1e-12)
        assert at.loc[a, "worst_iteration_max_load_sd"] == pytest.approx(w.std(ddof=1), rel=1e-9)
    m0, s0, n0 = stats[ARMS[0]]
    for a in ARMS[1:]:
        m, s, n = stats[a]
        assert at.loc[a, "delta_eval_loss"] == pytest.approx(m - m0, abs=1e-12)
        pooled = ((n - 1) * s * s + (n0 - 1) * s0 * s0) / ((n - 1) + (n0 - 1))
        assert at.loc[a, "delta_eval_loss_se"] == pytest.approx(math.sqrt(pooled / n + pooled / n0), rel=1e-9)
    assert at.loc[ARMS[0], "reference"] and at.loc[ARMS[0], "delta_eval_loss"] == 0
    assert at.loc[PER_ITERATION, "n"] == 1 and math.isnan(at.loc[PER_ITERATION, "eval_loss_sd"])
    pm = ma.plus_minus_table(at.reset_index()).set_index("arm")
    assert pm.loc[ARMS[1], "eval_loss"] == f"{stats[ARMS[1]][0]:.3f} ± {stats[ARMS[1]][1]:.3f}"
    assert pm.loc[ARMS[1], "delta_eval_loss"] == (f"{stats[ARMS[1]][0] - m0:.3f} ± "
                                                   f"{at.loc[ARMS[1], 'delta_eval_loss_se']:.3f}")
    assert "±" not in pm.loc[PER_ITERATION, "eval_loss"]                       # one run: no spread to show
    with pytest.raises(ValueError, match="no-such-arm"):
        ma.arm_tracking_table(runs, reference="no-such-arm")


def test_arm_tracking_table_at_equal_steps(sweep):
    # an arm whose replicates ran longer is compared at the step every run reached
    a, b = (copy.copy(sweep[f"{ARMS[1]}-s{s}"]) for s in SEEDS)
    ref = copy.copy(sweep[f"{ARMS[0]}-s{SEEDS[0]}"])
    ref.eval = ref.eval[ref.eval["step"] <= EVAL]
    at = ma.arm_tracking_table([ref, a, b]).set_index("arm")
    assert (at["eval_step"] == EVAL).all()
    v = [float(r.eval[r.eval["step"] == EVAL]["loss"].iloc[0]) for r in (a, b)]
    assert at.loc[ARMS[1], "eval_loss"] == pytest.approx(np.mean(v), rel=1e-12)

"""Loaders for moe-dist run directories: metrics history, config, checkpoints, gate decisions.

A run directory (``moe-dist train --run-dir DIR``) holds ``config.yaml``, ``train.log``,
``metrics.h5`` and ``checkpoints/step-XXXXXXXX.h5`` (formats: docs/file-formats.md).
Everything here returns tidy pandas tables, one row per observation:

    run = load_run("runs/aux0.01")
    run.train            # step, tokens, epoch, loss, ce, aux, z, lr, grad_norm, ...
    run.eval             # step, tokens, epoch, loss, ppl, scored, wall_clock
    run.expert_load      # step, iteration, expert, count, share, load, prob_mean
    run.expert_summary   # step, iteration, entropy, max_load, min_load, dropped, ...
    run.flat_config      # {"moe.aux_loss_coef": 0.01, "moe.top_k": 2, ...}

    runs = load_runs("runs/")             # every run directory below runs/
    table = runs_table(runs)              # one row per run, config columns + summaries
    axes = differing_config(runs)         # the config columns that differ: the ablation axes

A metrics.h5 that is still being written is read safely (retry, then cut each group
to its shortest dataset), so every function works on a live run; call it again to
see newer rows. Steps are deduplicated with the latest row winning.
"""
from __future__ import annotations

import glob
import json
import math
import os
import re
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import h5py
import numpy as np
import pandas as pd

__all__ = [
    "read_metrics", "read_config", "flatten_config", "dedupe_steps", "config_changes_table",
    "train_table", "eval_table", "expert_load_table", "expert_summary_table",
    "Run", "load_run", "load_runs", "find_run_dirs", "runs_table", "differing_config",
    "concat_runs", "time_to_target", "tracking_table",
    "list_checkpoints", "newest_checkpoint", "read_checkpoint_info",
    "router_stats", "expert_weight_norms",
    "load_gate", "gate_table", "same_run_dir", "figures_dir", "save_figure", "resolve_path",
    "agreement_table", "bias_table", "load_array", "load_heatmaps", "iteration_load_table",
    "worst_iteration_max_load", "REPLICATE_KEYS", "arm_key", "arm_name", "group_replicates",
    "arm_curves", "noise_floor", "arm_tracking_table", "plus_minus_table",
]

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TRAIN_COLUMNS = ["step", "tokens", "epoch", "loss", "ce", "aux", "z", "lr", "grad_norm",
                 "tokens_per_sec", "step_time", "nan_events"]
EVAL_COLUMNS = ["step", "tokens", "epoch", "loss", "ppl", "scored"]


# ---------------------------------------------------------------------------
# metrics.h5


def _open(path: str) -> h5py.File:
    # The trainer writes with HDF5 file locking off; a reader that locks would fail or block.
    return h5py.File(path, "r", locking=False)


def read_metrics(path: str, tries: int = 20, delay: float = 0.1) -> dict[str, Any]:
    """Reads a metrics.h5 (or a run directory's) into ``{"attrs": {...}, group: {name: array}}``.

    Safe on a live file: an open or read that coincides with an append is retried, and
    each group is cut to its shortest dataset (a reader can see one dataset a row
    longer than the others while the writer appends).
    """
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.h5")
    last: Exception | None = None
    for _ in range(max(tries, 1)):
        try:
            with _open(path) as f:
                out: dict[str, Any] = {"attrs": _checked_attrs(f, path)}
                for g in f:
                    if not isinstance(f[g], h5py.Group):
                        continue
                    ds = {k: d for k, d in f[g].items() if isinstance(d, h5py.Dataset)}
                    n = min((d.shape[0] for d in ds.values()), default=0)
                    out[g] = {k: d[:n] for k, d in ds.items()}
                return out
        except (OSError, KeyError, RuntimeError, ValueError) as e:  # mid-append or mid-creation
            last = e
            time.sleep(delay)
    raise OSError(f"could not read {path} after {tries} tries: {last}")


def _attr(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _checked_attrs(obj: Any, path: str) -> dict[str, Any]:
    """An object's attributes; a string with a ``<name>_crc32`` beside it must match it.

    moe-dist stores the CRC-32 of its JSON attributes (config, config_changes, loader, ...):
    their bytes sit in HDF5's global heap, which no HDF5 checksum covers.
    """
    attrs = {k: _attr(v) for k, v in obj.attrs.items()}
    for k, v in attrs.items():
        crc = attrs.get(k + "_crc32")
        if isinstance(v, str) and crc is not None and zlib.crc32(v.encode()) != crc:
            raise ValueError(f"{path}: attribute {obj.name} @{k} fails its CRC-32 (@{k}_crc32): the file is damaged")
    return attrs


def dedupe_steps(df: pd.DataFrame, step: str = "step") -> pd.DataFrame:
    """Keeps one row per step, the latest written; rows superseded by a restart are dropped.

    A row is kept only if every later row has a larger step: when a run restarted from an
    earlier step without truncating its history (older files, concatenated logs), the
    rows it re-did replace the earlier ones, and the abandoned rows past the restart
    point go too. On a well-formed history (strictly increasing steps) this is a no-op.
    """
    if df.empty:
        return df.reset_index(drop=True)
    s = df[step].to_numpy()
    # suffix minimum of the steps written after each row
    later_min = np.minimum.accumulate(s[::-1])[::-1]
    later_min = np.append(later_min[1:], np.iinfo(np.int64).max)
    keep = s < later_min
    return df.loc[keep].sort_values(step, kind="stable").reset_index(drop=True)


def _wall_clock(steps: np.ndarray, step_time: np.ndarray) -> np.ndarray:
    # step_time is the mean time of the steps of the interval ending at that row.
    prev = np.concatenate([[0], steps[:-1]]) if len(steps) else steps
    return np.cumsum(np.maximum(steps - prev, 0) * step_time)


def train_table(m: dict[str, Any]) -> pd.DataFrame:
    """/train as a table, deduplicated, plus ``ppl`` (exp ce), ``wall_clock`` (s) and ``nan_new``.

    ``wall_clock`` is the cumulative training time (sum of step times; evaluation and
    checkpoint time excluded), the clock used for "wall-clock to target loss".
    """
    g = m.get("train", {})
    df = pd.DataFrame({k: g[k] for k in TRAIN_COLUMNS if k in g})
    if df.empty:
        return pd.DataFrame(columns=TRAIN_COLUMNS + ["ppl", "wall_clock", "nan_new"])
    df = dedupe_steps(df)
    df["ppl"] = np.exp(df["ce"]) if "ce" in df else np.nan
    df["wall_clock"] = _wall_clock(df["step"].to_numpy(), df["step_time"].to_numpy())
    df["nan_new"] = df["nan_events"].diff().fillna(df["nan_events"]).astype("int64")
    return df


def eval_table(m: dict[str, Any], train: pd.DataFrame | None = None) -> pd.DataFrame:
    """/eval as a table, deduplicated; ``wall_clock`` interpolated from the train rows."""
    g = m.get("eval", {})
    df = pd.DataFrame({k: g[k] for k in EVAL_COLUMNS if k in g})
    if df.empty:
        return pd.DataFrame(columns=EVAL_COLUMNS + ["wall_clock"])
    df = dedupe_steps(df)
    if train is None:
        train = train_table(m)
    if len(train):
        df["wall_clock"] = np.interp(df["step"], np.concatenate([[0], train["step"]]),
                                     np.concatenate([[0.0], train["wall_clock"]]))
    else:
        df["wall_clock"] = np.nan
    return df


def _expert_arrays(m: dict[str, Any]):
    g = m.get("experts")
    if not g or "counts" not in g or len(g["step"]) == 0:
        return None
    steps = np.asarray(g["step"])
    # dedupe on the row index, then take the arrays
    idx = dedupe_steps(pd.DataFrame({"step": steps, "row": np.arange(len(steps))}))["row"].to_numpy()
    return {k: np.asarray(v)[idx] for k, v in g.items()}


def expert_load_table(m: dict[str, Any]) -> pd.DataFrame:
    """Per-expert load, long format: step, iteration, expert, count, share, load, prob_mean.

    ``count`` is the assignments routed to the expert over the interval ending at
    ``step`` (before drops), ``share = count / Σ_e count`` and ``load = E · share``
    (1 = perfectly even, the scale of the history's max_load/min_load). Empty for a dense run.
    """
    cols = ["step", "iteration", "expert", "count", "share", "load", "prob_mean"]
    a = _expert_arrays(m)
    if a is None:
        return pd.DataFrame(columns=cols)
    counts = a["counts"].astype(np.int64)                  # [S, R, E]
    S, R, E = counts.shape
    tot = counts.sum(axis=2, keepdims=True)
    share = np.divide(counts, tot, out=np.zeros(counts.shape), where=tot > 0)
    st, it, ex = np.meshgrid(a["step"], np.arange(R), np.arange(E), indexing="ij")
    return pd.DataFrame({
        "step": st.ravel(), "iteration": it.ravel(), "expert": ex.ravel(),
        "count": counts.ravel(), "share": share.ravel(), "load": (E * share).ravel(),
        "prob_mean": a["prob_mean"].astype(np.float64).ravel() if "prob_mean" in a else np.nan,
    })


def expert_summary_table(m: dict[str, Any]) -> pd.DataFrame:
    """Per-iteration routing summary: step, iteration, assignments, dropped, drop_frac,
    entropy, max_load, min_load, top_expert, top_share (empty for a dense run)."""
    cols = ["step", "iteration", "assignments", "dropped", "drop_frac", "entropy", "max_load",
            "min_load", "top_expert", "top_share"]
    a = _expert_arrays(m)
    if a is None:
        return pd.DataFrame(columns=cols)
    counts = a["counts"].astype(np.int64)
    S, R, E = counts.shape
    tot = counts.sum(axis=2)
    st, it = np.meshgrid(a["step"], np.arange(R), indexing="ij")
    dropped = a["dropped"].astype(np.int64) if "dropped" in a else np.zeros((S, R), np.int64)
    top = counts.argmax(axis=2)
    df = pd.DataFrame({
        "step": st.ravel(), "iteration": it.ravel(), "assignments": tot.ravel(),
        "dropped": dropped.ravel(),
        "drop_frac": np.divide(dropped, tot, out=np.zeros((S, R)), where=tot > 0).ravel(),
        "entropy": a["entropy"].ravel(), "max_load": a["max_load"].ravel(), "min_load": a["min_load"].ravel(),
        "top_expert": top.ravel(),
        "top_share": np.divide(counts.max(axis=2), tot, out=np.zeros((S, R)), where=tot > 0).ravel(),
    })
    return df


AGREEMENT_COLUMNS = ["step", "iteration", "pair", "agreement"]
BIAS_COLUMNS = ["step", "router", "expert", "bias"]


def agreement_table(m: dict[str, Any]) -> pd.DataFrame:
    """``/experts/agreement`` long: step, iteration r, pair ``"r-(r+1)"``, agreement.

    ``agreement`` is the mean over the interval's tokens of |K_r ∩ K_(r+1)| / k, the share of a token's
    top-k experts at iteration r that it picks again at iteration r+1 (1 = the same experts every
    iteration, 0 = never the same). Written only for a shared pool with R > 1; empty otherwise.
    """
    a = _expert_arrays(m)
    if a is None or "agreement" not in a or a["agreement"].size == 0:
        return pd.DataFrame(columns=AGREEMENT_COLUMNS)
    ag = a["agreement"].astype(np.float64)                  # [S, R-1]
    S, P = ag.shape
    st, it = np.meshgrid(a["step"], np.arange(P), indexing="ij")
    return pd.DataFrame({"step": st.ravel(), "iteration": it.ravel(),
                         "pair": [f"{r}-{r + 1}" for r in it.ravel()], "agreement": ag.ravel()})


def bias_table(m: dict[str, Any]) -> pd.DataFrame:
    """``/experts/bias`` long: step, router, expert, bias (the selection bias after the row's step).

    Routers are the pools (``moe.routers = per_pool``) or the iterations (``per_iteration``). Written
    only when ``moe.router_bias_rate > 0``; empty otherwise.
    """
    a = _expert_arrays(m)
    if a is None or "bias" not in a or a["bias"].size == 0:
        return pd.DataFrame(columns=BIAS_COLUMNS)
    b = a["bias"].astype(np.float64)                         # [S, Q, E]
    S, Q, E = b.shape
    st, q, ex = np.meshgrid(a["step"], np.arange(Q), np.arange(E), indexing="ij")
    return pd.DataFrame({"step": st.ravel(), "router": q.ravel(), "expert": ex.ravel(), "bias": b.ravel()})


def load_array(run: "Run") -> tuple[np.ndarray, np.ndarray]:
    """``(steps [S], load [S, R, E])``: each iteration's load per expert and interval, not averaged
    over iterations (``load = E · count / Σ_e count``; 1 = even). Empty arrays for a dense run."""
    el = run.expert_load
    if el.empty:
        return np.zeros(0, np.int64), np.zeros((0, run.iterations, 0))
    steps = np.sort(el["step"].unique())
    R, E = int(el["iteration"].max()) + 1, int(el["expert"].max()) + 1
    arr = el.sort_values(["step", "iteration", "expert"])["load"].to_numpy(np.float64).reshape(len(steps), R, E)
    return steps, arr


def load_heatmaps(run: "Run") -> dict[int, pd.DataFrame]:
    """Heatmap data, one per recurrent iteration: ``{r: DataFrame(index=step, columns=expert, values=load)}``."""
    steps, arr = load_array(run)
    return {r: pd.DataFrame(arr[:, r, :], index=pd.Index(steps, name="step"),
                            columns=pd.Index(range(arr.shape[2]), name="expert"))
            for r in range(arr.shape[1])}


def iteration_load_table(run: "Run") -> pd.DataFrame:
    """Per iteration over the final interval (docs/statistics.md): mean max load, mean min load, mean
    entropy, the top expert and its share of that iteration's assignments, and ``worst``: whether it is
    the iteration with the highest mean max load (the one ``moe-dist compare`` reports)."""
    cols = ["iteration", "max_load", "min_load", "entropy", "top_expert", "top_share", "worst"]
    if run.expert_summary.empty:
        return pd.DataFrame(columns=cols)
    _, fs = final_interval(run)
    g = fs.groupby("iteration")[["max_load", "min_load", "entropy"]].mean()
    el = run.expert_load[run.expert_load["step"].isin(fs["step"])]
    counts = el.groupby(["iteration", "expert"])["count"].sum().unstack("expert")
    df = g.reset_index()
    df["top_expert"] = counts.to_numpy().argmax(axis=1)
    df["top_share"] = counts.max(axis=1).to_numpy() / np.maximum(counts.sum(axis=1).to_numpy(), 1)
    df["worst"] = False
    w = worst_iteration_max_load(run)
    if w["iteration"] is not None:
        df.loc[df["iteration"] == w["iteration"], "worst"] = True
    return df[cols]


def worst_iteration_max_load(run: "Run") -> dict[str, Any]:
    """The highest per-iteration mean of max load over the final interval, and its iteration:
    ``{"iteration": r, "max_load": x}`` (the first iteration on a tie), as ``moe-dist compare``'s
    ``worst_iteration`` / ``worst_iteration_max_load``. The mean over iterations hides a collapse in one
    of them. ``None``/NaN for a dense run."""
    if run.expert_summary.empty:
        return {"iteration": None, "max_load": np.nan}
    _, fs = final_interval(run)
    if fs.empty:
        return {"iteration": None, "max_load": np.nan}
    per = fs.groupby("iteration")["max_load"].mean()
    r = int(per.to_numpy().argmax())                         # first maximum, as compare
    return {"iteration": int(per.index[r]), "max_load": float(per.iloc[r])}


# ---------------------------------------------------------------------------
# configuration


def read_config(run_dir: str) -> dict[str, Any]:
    """The resolved config (nested dict) from metrics.h5's ``config`` attribute, else the newest checkpoint's."""
    p = os.path.join(run_dir, "metrics.h5")
    if os.path.exists(p):
        try:
            cfg = read_metrics(p)["attrs"].get("config")
            if cfg:
                return json.loads(cfg)
        except OSError:
            pass
    ck = newest_checkpoint(run_dir)
    if ck:
        return read_checkpoint_info(ck)["config"]
    return {}


def config_changes_table(m: dict[str, Any]) -> pd.DataFrame:
    """Keys changed on resume (``train --allow-config-change``): step, key, old, new.

    From metrics.h5's root attribute ``config_changes`` (a JSON list); ``step`` is the checkpoint the
    run resumed from: rows after it were trained with ``new``. The ``config`` attribute keeps the
    values the run started with. Empty when nothing changed.
    """
    text = m["attrs"].get("config_changes")
    rows = json.loads(text) if text else []
    return pd.DataFrame(rows, columns=["step", "key", "old", "new"])


def flatten_config(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"moe": {"top_k": 2}}`` -> ``{"moe.top_k": 2}``."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten_config(v, key + "."))
        else:
            out[key] = v
    return out


# ---------------------------------------------------------------------------
# runs


@dataclass
class Run:
    run_dir: str
    name: str
    config: dict[str, Any]
    flat_config: dict[str, Any]
    train: pd.DataFrame
    eval: pd.DataFrame
    expert_load: pd.DataFrame
    expert_summary: pd.DataFrame
    attrs: dict[str, Any] = field(default_factory=dict)
    agreement: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=AGREEMENT_COLUMNS))
    bias: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=BIAS_COLUMNS))

    @property
    def num_experts(self) -> int:
        return int(self.flat_config.get("moe.num_experts") or 0)

    @property
    def iterations(self) -> int:
        return int(self.flat_config.get("model.depth") or 1)

    @property
    def stopped_step(self) -> int | None:
        """The step after which the stage gate stopped the run (metrics.h5 root attribute), if it did."""
        v = self.attrs.get("stopped_step")
        return int(v) if v is not None else None

    @property
    def stopped_reason(self) -> str | None:
        return self.attrs.get("stopped_reason")

    @property
    def config_changes(self) -> pd.DataFrame:
        """Keys changed on resume (step, key, old, new); ``config`` holds the starting values."""
        return config_changes_table({"attrs": self.attrs})

    @property
    def final_config(self) -> dict[str, Any]:
        """``flat_config`` with every recorded change applied: the configuration the last rows used."""
        out = dict(self.flat_config)
        for _, c in self.config_changes.iterrows():
            out[c["key"]] = c["new"]
        return out

    @property
    def checkpoints(self) -> list[str]:
        return list_checkpoints(self.run_dir)

    def __repr__(self) -> str:
        return (f"Run({self.name!r}: {len(self.train)} train rows, {len(self.eval)} eval rows, "
                f"{len(self.expert_summary)} expert-summary rows, {len(self.checkpoints)} checkpoints)")


def load_run(run_dir: str, name: str | None = None) -> Run:
    """Loads one run directory (live or finished)."""
    run_dir = os.path.abspath(run_dir)
    m = read_metrics(os.path.join(run_dir, "metrics.h5"))
    cfg = json.loads(m["attrs"]["config"]) if m["attrs"].get("config") else read_config(run_dir)
    train = train_table(m)
    return Run(run_dir=run_dir, name=name or os.path.basename(run_dir.rstrip("/")), config=cfg,
               flat_config=flatten_config(cfg), train=train, eval=eval_table(m, train),
               expert_load=expert_load_table(m), expert_summary=expert_summary_table(m), attrs=m["attrs"],
               agreement=agreement_table(m), bias=bias_table(m))


def find_run_dirs(root: str) -> list[str]:
    """Every directory at or below ``root`` that holds a metrics.h5, sorted."""
    hits = glob.glob(os.path.join(root, "**", "metrics.h5"), recursive=True)
    return sorted(os.path.dirname(os.path.abspath(h)) for h in hits)


def load_runs(paths: str | Iterable[str]) -> list[Run]:
    """Loads runs from a directory of runs (searched recursively) or a list of run directories.

    Run names are the directory paths relative to their common parent, so they are unique.
    """
    if isinstance(paths, str):
        dirs = find_run_dirs(paths) if not os.path.exists(os.path.join(paths, "metrics.h5")) else [paths]
    else:
        dirs = [os.path.abspath(p) for p in paths]
    if not dirs:
        return []
    dirs = [os.path.abspath(d) for d in dirs]
    common = os.path.commonpath(dirs) if len(dirs) > 1 else os.path.dirname(dirs[0])
    return [load_run(d, name=os.path.relpath(d, common)) for d in dirs]


def differing_config(runs: list[Run],
                     ignore: Iterable[str] = ("name", "data.train", "data.valid", "data.tokenizer")) -> list[str]:
    """The flattened config keys whose values differ between runs: the ablation axes.

    ``name`` is not one (every run of a sweep has its own name), nor are the data paths."""
    keys = sorted({k for r in runs for k in r.flat_config})
    out = []
    for k in keys:
        if k in ignore:
            continue
        vals = {json.dumps(r.flat_config.get(k), sort_keys=True) for r in runs}
        if len(vals) > 1:
            out.append(k)
    return out


def concat_runs(runs: list[Run], table: str = "eval", config_columns: Iterable[str] | None = None) -> pd.DataFrame:
    """One table (``train``, ``eval``, ``expert_load``, ``expert_summary``) over many runs,
    with a ``run`` column and the given config columns (default: the differing ones)."""
    cols = list(config_columns) if config_columns is not None else differing_config(runs)
    frames = []
    for r in runs:
        df = getattr(r, table).copy()
        df.insert(0, "run", r.name)
        for c in cols:
            df[c] = r.flat_config.get(c)
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def time_to_target(run: Run, target: float) -> dict[str, Any]:
    """First evaluation with loss <= target: its step, tokens and training wall-clock (s); NaN if never."""
    ev = run.eval
    hit = ev[ev["loss"] <= target] if len(ev) else ev
    if len(hit) == 0:
        return {"step": np.nan, "tokens": np.nan, "wall_clock": np.nan}
    row = hit.iloc[0]
    return {"step": int(row["step"]), "tokens": int(row["tokens"]), "wall_clock": float(row["wall_clock"])}


def runs_table(runs: list[Run], config_columns: Iterable[str] | None = None) -> pd.DataFrame:
    """One row per run: name, run_dir, the flattened config (all keys unless given), last step."""
    rows = []
    for r in runs:
        cfg = r.flat_config if config_columns is None else {c: r.flat_config.get(c) for c in config_columns}
        rows.append({"run": r.name, "run_dir": r.run_dir, **cfg,
                     "last_step": int(r.train["step"].iloc[-1]) if len(r.train) else 0})
    return pd.DataFrame(rows)


def resume_steps(run_dir: str) -> list[int]:
    """Steps at which the run was resumed from a checkpoint (the trainer's `resumed from ... at step N`
    lines in RUN_DIR/train.log), in order; curves mark them."""
    path = os.path.join(run_dir, "train.log")
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.search(r"resumed from .* at step (\d+)\s*$", line)
            if m:
                out.append(int(m.group(1)))
    return out


def mark_resumes(ax, run_dir: str, **kw) -> None:
    """Vertical dashed lines at the steps where the run was resumed (x axis: steps)."""
    for i, s in enumerate(resume_steps(run_dir)):
        ax.axvline(s, color=kw.get("color", "gray"), ls="--", lw=0.8, label="resumed" if i == 0 and kw.get("label", True) else None)


def spread_summary(values: Iterable[float]) -> dict[str, float]:
    """Median and quartiles by linear interpolation (numpy's default), non-finite values left out:
    the definition `moe-dist compare` and `moe-dist gate` use (docs/statistics.md)."""
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return {"count": 0, "median": np.nan, "q25": np.nan, "q75": np.nan}
    q25, med, q75 = np.quantile(v, [0.25, 0.5, 0.75])
    return {"count": int(len(v)), "median": float(med), "q25": float(q25), "q75": float(q75)}


def final_interval(run: Run) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The train rows and expert-summary rows after the second-to-last evaluation (all rows with fewer
    than two evaluations): the window `moe-dist compare` reports "final" values over."""
    e = run.eval
    start = e["step"].iloc[-2] if len(e) >= 2 else -np.inf
    return run.train[run.train["step"] > start], run.expert_summary[run.expert_summary["step"] > start]


def tracking_table(runs: list[Run], target_loss: float | None = None) -> pd.DataFrame:
    """The research notes' tracking table, one row per run, with the definitions of `moe-dist compare`
    (docs/statistics.md).

    quality: final/best eval loss and ppl; efficiency: tokens/s as the median of the logged intervals
    with its quartiles, training wall-clock, wall-clock/step/tokens to ``target_loss``; MoE health over
    the final interval (rows after the second-to-last evaluation; means over rows and iterations): aux,
    entropy, min/max load, the worst iteration's max load (``worst_iteration_max_load``), the top expert and its share of the interval's assignments, and the dropped
    fraction over the whole run; stability: mean grad norm over the final interval, largest grad norm,
    NaN events; ``stopped_step`` when a stage gate stopped the run.
    """
    axes = differing_config(runs)
    rows = []
    for r in runs:
        t, e, s = r.train, r.eval, r.expert_summary
        row: dict[str, Any] = {"run": r.name}
        for c in axes:
            row[c] = r.flat_config.get(c)
        row["steps"] = int(t["step"].iloc[-1]) if len(t) else 0
        row["tokens"] = int(t["tokens"].iloc[-1]) if len(t) else 0
        # quality
        row["eval_loss"] = float(e["loss"].iloc[-1]) if len(e) else np.nan
        row["eval_ppl"] = float(e["ppl"].iloc[-1]) if len(e) else np.nan
        row["best_eval_loss"] = float(e["loss"].min()) if len(e) else np.nan
        row["train_loss"] = float(t["loss"].iloc[-1]) if len(t) else np.nan
        # efficiency
        speed = spread_summary(t["tokens_per_sec"][t["tokens_per_sec"] > 0]) if len(t) else spread_summary([])
        row["tokens_per_sec"], row["tokens_per_sec_q25"], row["tokens_per_sec_q75"] = speed["median"], speed["q25"], speed["q75"]
        row["wall_clock_s"] = float(t["wall_clock"].iloc[-1]) if len(t) else np.nan
        if target_loss is not None:
            tt = time_to_target(r, target_loss)
            row["target_loss"] = target_loss
            row["step_to_target"] = tt["step"]
            row["tokens_to_target"] = tt["tokens"]
            row["wall_clock_to_target_s"] = tt["wall_clock"]
        # MoE health, over the final interval
        ft, fs = final_interval(r)
        row["aux"] = float(ft["aux"].mean()) if len(ft) else np.nan
        if len(s):
            per_row = fs.groupby("step")[["entropy", "max_load", "min_load"]].mean()   # mean over iterations
            for c in ("entropy", "max_load", "min_load"):
                row[c] = float(fs[c].mean())
                q = spread_summary(per_row[c])                 # spread over the interval's rows (error bars)
                row[c + "_q25"], row[c + "_q75"] = q["q25"], q["q75"]
            load = r.expert_load[r.expert_load["step"].isin(fs["step"])].groupby("expert")["count"].sum()
            row["top_expert"] = int(load.idxmax()) if load.sum() > 0 else np.nan
            row["top_share"] = float(load.max() / load.sum()) if load.sum() > 0 else np.nan
            row["drop_frac"] = float(s["dropped"].sum() / max(s["assignments"].sum(), 1))
            w = worst_iteration_max_load(r)
            row["worst_iteration"], row["worst_iteration_max_load"] = w["iteration"], w["max_load"]
        else:
            for c in ("entropy", "max_load", "min_load", "top_expert", "top_share", "drop_frac", "entropy_q25", "entropy_q75",
                      "worst_iteration", "worst_iteration_max_load",
                      "max_load_q25", "max_load_q75", "min_load_q25", "min_load_q75"):
                row[c] = np.nan
        # stability
        row["grad_norm"] = float(ft["grad_norm"].mean()) if len(ft) else np.nan
        row["grad_norm_max"] = float(t["grad_norm"].max()) if len(t) else np.nan
        row["nan_events"] = int(t["nan_events"].iloc[-1]) if len(t) else 0
        row["stopped_step"] = r.stopped_step  # stage gate stop recorded by the trainer (None: not stopped)
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------
# replicates: runs of one arm that differ only in their seeds

# Keys that make two runs replicates rather than different arms (docs/statistics.md).
REPLICATE_KEYS = ("name", "train.seed", "train.data_seed")


def arm_key(run: Run) -> str:
    """The run's configuration without ``name``, ``train.seed`` and ``train.data_seed``, as canonical
    JSON: runs with the same key are replicates of one arm (as ``moe-dist compare`` groups them)."""
    return json.dumps({k: v for k, v in run.flat_config.items() if k not in REPLICATE_KEYS}, sort_keys=True)


def _strip_seed(name: str) -> str:
    return re.sub(r"-s\d+$", "", name)


def arm_name(runs: list[Run]) -> str:
    """A label for an arm: the config ``name`` with the sweep's ``-s<seed>`` suffix removed, when the
    replicates agree on it; else the run name of the first replicate."""
    names = {_strip_seed(str(r.flat_config.get("name") or r.name)) for r in runs}
    return names.pop() if len(names) == 1 else _strip_seed(runs[0].name)


def group_replicates(runs: list[Run]) -> dict[str, list[Run]]:
    """``{arm: [runs]}``, runs grouped by ``arm_key`` in the order their arms first appear, each arm's
    runs ordered by (train.seed, train.data_seed). Labels are ``arm_name``; two arms with the same label
    get ``#2``, ``#3`` suffixes. A single run is an arm of one."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(arm_key(r), []).append(r)
    out: dict[str, list[Run]] = {}
    for members in groups.values():
        members = sorted(members, key=lambda r: (r.flat_config.get("train.seed") or 0,
                                                 r.flat_config.get("train.data_seed") or r.flat_config.get("train.seed") or 0))
        label, i = arm_name(members), 2
        while label in out:
            label = f"{arm_name(members)}#{i}"
            i += 1
        out[label] = members
    return out


def _sd(v: np.ndarray) -> float:
    return float(np.std(v, ddof=1)) if len(v) >= 2 else np.nan


def arm_curves(runs: list[Run], table: str = "eval", column: str = "loss", x: str = "step") -> pd.DataFrame:
    """Per arm and x value (``step`` or ``tokens``) that every replicate of the arm logged: n, mean, sd
    (sample, ddof 1; NaN for n = 1), se = sd/√n, min, max of ``column`` across the replicates.

    Columns: arm, ``x``, n, mean, sd, se, min, max. Only common x values: a replicate that stopped
    earlier (or has not logged yet) ends the arm's curve there, so a band is never made of fewer runs.
    """
    rows = []
    for arm, members in group_replicates(runs).items():
        frames = [getattr(r, table).set_index(x)[column] for r in members]
        common = sorted(set.intersection(*[set(f.index) for f in frames])) if frames else []
        for xv in common:
            v = np.array([float(f.loc[xv]) for f in frames])
            sd = _sd(v)
            rows.append({"arm": arm, x: xv, "n": len(v), "mean": float(v.mean()), "sd": sd,
                         "se": sd / math.sqrt(len(v)) if len(v) >= 2 else np.nan,
                         "min": float(v.min()), "max": float(v.max())})
    return pd.DataFrame(rows, columns=["arm", x, "n", "mean", "sd", "se", "min", "max"])


def noise_floor(runs: list[Run], x: str = "step") -> pd.DataFrame:
    """The noise floor: the sd of eval loss across the seeds of each arm at each eval step (arms with at
    least two replicates): arm, ``x``, n, sd. The smallest difference two single runs can show for real
    is a few times this."""
    c = arm_curves(runs, "eval", "loss", x)
    return c[c["n"] >= 2][["arm", x, "n", "sd"]].reset_index(drop=True)


TRACKED = ("eval_loss", "eval_ppl", "best_eval_loss", "tokens_per_sec", "wall_clock_to_target_s",
           "aux", "entropy", "max_load", "min_load", "worst_iteration_max_load", "drop_frac", "grad_norm_max",
           "nan_events")


def arm_tracking_table(runs: list[Run], target_loss: float | None = None, reference: str | None = None,
                       columns: Iterable[str] = TRACKED) -> pd.DataFrame:
    """The tracking table per arm: for each column of ``tracking_table`` (one value per replicate),
    ``<col>`` = the mean over the arm's replicates, ``<col>_sd`` (ddof 1), ``<col>_se`` = sd/√n, plus
    ``n``, ``runs`` and the config keys that differ between arms. Eval loss is the last evaluation at
    the largest eval step every run reached (equal steps), so arms are compared at one budget.

    ``reference`` (an arm label; default the first arm): ``delta_eval_loss`` = arm mean − reference mean
    and ``delta_eval_loss_se`` = √(s_p²/n_a + s_p²/n_ref), s_p² the pooled variance of both arms (as
    ``moe-dist compare`` and the gate; NaN when neither arm has two runs).
    """
    groups = group_replicates(runs)
    if not groups:
        return pd.DataFrame()
    equal = min(int(r.eval["step"].max()) for r in runs if len(r.eval)) if any(len(r.eval) for r in runs) else None
    tt = tracking_table(runs, target_loss)
    if equal is not None:   # eval at equal steps
        for i, r in enumerate(runs):
            e = r.eval[r.eval["step"] <= equal]
            tt.loc[i, "eval_loss"] = float(e["loss"].iloc[-1]) if len(e) else np.nan
            tt.loc[i, "eval_ppl"] = float(e["ppl"].iloc[-1]) if len(e) else np.nan
    by_run = {r.run_dir: i for i, r in enumerate(runs)}
    axes = differing_config([g[0] for g in groups.values()]) if len(groups) > 1 else []
    rows = []
    for arm, members in groups.items():
        sub = tt.iloc[[by_run[r.run_dir] for r in members]]
        row: dict[str, Any] = {"arm": arm, "n": len(members), "runs": ", ".join(r.name for r in members),
                               "eval_step": equal}
        for c in axes:
            row[c] = members[0].flat_config.get(c)
        for c in columns:
            v = pd.to_numeric(sub[c], errors="coerce").to_numpy(np.float64) if c in sub else np.array([np.nan])
            v = v[np.isfinite(v)]
            row[c] = float(v.mean()) if len(v) else np.nan
            row[c + "_sd"] = _sd(v)
            row[c + "_se"] = row[c + "_sd"] / math.sqrt(len(v)) if len(v) >= 2 else np.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    ref = out[out["arm"] == (reference if reference is not None else out["arm"].iloc[0])]
    if ref.empty:
        raise ValueError(f"reference arm {reference!r} is not one of {list(out['arm'])}")
    ref = ref.iloc[0]
    out["delta_eval_loss"] = out["eval_loss"] - ref["eval_loss"]
    # The same definition as moe-dist compare and gate (docs/statistics.md): the pooled variance of both arms,
    # s_p² = Σ(n_i − 1)s_i² / Σ(n_i − 1), so an arm of one run borrows the other's spread.
    def pooled_se(n_a, sd_a, n_b, sd_b):
        dof = max(n_a - 1, 0) + max(n_b - 1, 0)
        if dof == 0:
            return np.nan
        var = (max(n_a - 1, 0) * (sd_a if np.isfinite(sd_a) else 0.0) ** 2
               + max(n_b - 1, 0) * (sd_b if np.isfinite(sd_b) else 0.0) ** 2) / dof
        return math.sqrt(var / n_a + var / n_b)
    out["delta_eval_loss_se"] = [pooled_se(int(r["n"]), float(r["eval_loss_sd"]), int(ref["n"]), float(ref["eval_loss_sd"]))
                                 for _, r in out.iterrows()]
    out["reference"] = out["arm"] == ref["arm"]
    out.loc[out["reference"], "delta_eval_loss_se"] = np.nan      # the reference against itself
    return out


def plus_minus_table(arms: pd.DataFrame, columns: Iterable[str] = ("eval_loss", "delta_eval_loss", "eval_ppl",
                     "tokens_per_sec", "worst_iteration_max_load", "max_load", "entropy", "aux"),
                     spread: str = "sd", digits: int = 3) -> pd.DataFrame:
    """``arm_tracking_table`` for reading: one ``mean ± sd`` string per column (``spread="se"`` for
    standard errors; ``delta_eval_loss`` always shows its standard error), just the mean when n = 1."""
    out = arms[["arm", "n"]].copy()
    for c in columns:
        if c not in arms:
            continue
        err = arms[c + "_se"] if c == "delta_eval_loss" else arms[f"{c}_{spread}"]
        fmt = "{:.0f}" if c in ("tokens_per_sec", "wall_clock_to_target_s") else f"{{:.{digits}f}}"
        out[c] = [fmt.format(m) + (f" ± {fmt.format(e)}" if np.isfinite(e) else "") if np.isfinite(m) else ""
                  for m, e in zip(arms[c], err)]
    return out


# ---------------------------------------------------------------------------
# checkpoints


def list_checkpoints(run_dir: str) -> list[str]:
    """Complete checkpoints of a run, oldest first (temporary ``.step-*.h5.partial`` files excluded)."""
    return sorted(glob.glob(os.path.join(run_dir, "checkpoints", "step-*.h5")))


def newest_checkpoint(run_dir: str) -> str | None:
    c = list_checkpoints(run_dir)
    return c[-1] if c else None


def read_checkpoint_info(path: str) -> dict[str, Any]:
    """Root attributes of a checkpoint (config parsed), the /state attributes and parameter shapes."""
    with _open(path) as f:
        info = _checked_attrs(f, path)
        info["config"] = json.loads(info["config"]) if info.get("config") else {}
        info["state"] = _checked_attrs(f["state"], path) if "state" in f else {}
        shapes: dict[str, tuple] = {}
        if "params" in f:
            f["params"].visititems(lambda n, o: shapes.__setitem__(n, o.shape) if isinstance(o, h5py.Dataset) else None)
        info["params"] = shapes
    return info


def _pools(f: h5py.File) -> list[str]:
    return sorted(f["params/ffn"].keys(), key=int) if "params/ffn" in f else []


def router_stats(path: str) -> pd.DataFrame:
    """Router weight statistics per pool and expert (column ``router[:, e]``):
    norm (L2), mean, std, abs_max; plus cos_to_mean, the cosine between the expert's
    column and the mean column (near 1: the router barely distinguishes that expert).
    Empty for a dense checkpoint."""
    rows = []
    with _open(path) as f:
        for p in _pools(f):
            key = f"params/ffn/{p}/router"
            if key not in f:
                continue
            w = f[key][()].astype(np.float64)             # [d, E]
            mean_col = w.mean(axis=1)
            mn = np.linalg.norm(mean_col)
            for e in range(w.shape[1]):
                c = w[:, e]
                n = np.linalg.norm(c)
                rows.append({"pool": int(p), "expert": e, "norm": n, "mean": c.mean(), "std": c.std(),
                             "abs_max": np.abs(c).max(),
                             "cos_to_mean": float(c @ mean_col / (n * mn)) if n > 0 and mn > 0 else np.nan})
    return pd.DataFrame(rows, columns=["pool", "expert", "norm", "mean", "std", "abs_max", "cos_to_mean"])


def expert_weight_norms(path: str) -> pd.DataFrame:
    """Frobenius norm of each expert's slice of w1/w3/w2, per pool, long format:
    pool, expert, tensor, norm, rms; one row with tensor ``total`` per expert too.
    Reads one expert slice at a time (a checkpoint's expert tensors are chunked per
    expert), so it works on large checkpoints. Empty for a dense checkpoint."""
    rows = []
    with _open(path) as f:
        for p in _pools(f):
            g = f[f"params/ffn/{p}"]
            if "router" not in g:
                continue  # dense FFN
            names = [t for t in ("w1", "w3", "w2") if t in g]
            E = g[names[0]].shape[0]
            for e in range(E):
                sq, n_el = 0.0, 0
                for t in names:
                    x = g[t][e].astype(np.float64)
                    s = float(np.sum(x * x))
                    sq += s
                    n_el += x.size
                    rows.append({"pool": int(p), "expert": e, "tensor": t, "norm": math.sqrt(s),
                                 "rms": math.sqrt(s / x.size)})
                rows.append({"pool": int(p), "expert": e, "tensor": "total", "norm": math.sqrt(sq),
                             "rms": math.sqrt(sq / max(n_el, 1))})
    return pd.DataFrame(rows, columns=["pool", "expert", "tensor", "norm", "rms"])


# ---------------------------------------------------------------------------
# gate decisions (``moe-dist gate ... --json``)


def load_gate(path: str | None) -> dict[str, Any] | None:
    """A gate decision file (the JSON of ``moe-dist gate RUN_DIR... --reference REF --json``), from a
    file or a directory's ``gate.json``; None when there is none. The file's path is added as ``_path``."""
    if not path:
        return None
    path = resolve_path(path)
    if os.path.isdir(path):
        path = os.path.join(path, "gate.json")
    if not os.path.isfile(path):
        return None
    with open(path) as fh:
        gate = json.load(fh)
    gate["_path"] = path
    return gate


def find_gates(runs_dir: str | None, gate_json: str | None = None) -> list[dict[str, Any]]:
    """The gate decision files of a sweep: ``gate_json`` when given; else ``RUNS_DIR/gate.json``, else
    ``gate.json`` in RUNS_DIR's parent, and every ``phase-*/gate.json`` there, where the README's manual
    steps and jobs/gate.sbatch write them (``sweeps/s1/phase-1/gate.json`` for ``sweeps/s1/runs``)."""
    if gate_json:
        gate = load_gate(gate_json)
        return [gate] if gate else []
    if not runs_dir:
        return []
    runs_dir = resolve_path(runs_dir)
    parent = os.path.dirname(os.path.abspath(runs_dir))
    for single in (runs_dir, parent):
        gate = load_gate(single)
        if gate:
            return [gate]
    phases = sorted(glob.glob(os.path.join(parent, "phase-*", "gate.json")))
    return [g for g in (load_gate(p) for p in phases) if g]


def same_run_dir(given: str | None, run_dir: str, bases: Iterable[str] = ()) -> bool:
    """Whether a directory as another tool printed it (maybe relative to where that tool ran)
    names ``run_dir``: tried against ``bases``, then as ``resolve_path`` finds it, then, for a
    relative path, by its trailing components (``runs/aux0`` matches ``/x/runs/aux0``)."""
    if not given or not run_dir:
        return False
    target = os.path.realpath(run_dir)
    cands = [given] if os.path.isabs(given) else [os.path.join(b, given) for b in bases if b] + [resolve_path(given)]
    if any(os.path.realpath(c) == target for c in cands):
        return True
    if os.path.isabs(given):
        return False
    parts = [x for x in os.path.normpath(given).split(os.sep) if x not in ("", ".")]
    tail = os.path.normpath(target).split(os.sep)
    return bool(parts) and ".." not in parts and tail[-len(parts):] == parts


def _clauses(c: Any) -> Any:
    if isinstance(c, list) and all(isinstance(x, dict) for x in c):
        return "; ".join(f"{x.get('name')}={'yes' if x.get('holds') else 'no'}" for x in c)
    return c


def gate_table(gate: dict[str, Any] | None, runs: Iterable[Run] = (), base: str | None = None) -> pd.DataFrame:
    """One row per gated run: run_dir, name, decision, reason and the gate's other fields
    (clause lists as ``name=yes; name=no`` strings), flags ``promoted``, ``best``, ``reference``,
    and ``run``: the name of the matching Run of ``runs`` (matched by directory, not by the
    gate's ``name``, which is the config name and is shared by runs of one preset).

    ``base``: the directory relative run directories are tried against first (default: the gate
    file's directory).
    """
    cols = ["run", "run_dir", "name", "decision", "reason", "promoted", "best", "reference"]
    if not gate:
        return pd.DataFrame(columns=cols)
    rows = [dict(r) for r in gate.get("runs", [])]
    bases = [b for b in (base, os.path.dirname(gate["_path"]) if gate.get("_path") else None) if b]
    promoted = gate.get("promoted") or []
    promoted = [promoted] if isinstance(promoted, str) else list(promoted)
    best, ref = gate.get("best"), gate.get("reference")

    def same(a, b):  # two paths as the gate printed them
        return a is not None and b is not None and (os.path.normpath(str(a)) == os.path.normpath(str(b))
                                                     or os.path.realpath(str(a)) == os.path.realpath(str(b)))
    runs = list(runs)
    for r in rows:
        d = r.get("run_dir")
        r["promoted"] = any(same(d, p) for p in promoted) or r.get("decision") == "promote"
        r["best"] = same(d, best)
        r["reference"] = same(d, ref)
        match = [x.name for x in runs if same_run_dir(d, x.run_dir, bases)]
        r["run"] = match[0] if match else None
        for k in ("stop_clauses", "promote_clauses"):
            if k in r:
                r[k] = _clauses(r[k])
    df = pd.DataFrame(rows)
    for c in cols:
        if c not in df:
            df[c] = None
    return df[cols + [c for c in df.columns if c not in cols]]


# ---------------------------------------------------------------------------
# figures


def resolve_path(p: str) -> str:
    """An absolute path for a path given to a notebook.

    A kernel runs in the notebook's directory (notebooks/), not where ``jupyter`` was started,
    so a relative path is looked up, in order, against ``$PWD`` (the directory ``jupyter lab`` or
    ``jupyter nbconvert`` was started from), the kernel's working directory and the repository
    root; the first that exists wins, else it is taken relative to ``$PWD``.
    """
    if not p or os.path.isabs(p):
        return p
    p = os.path.expanduser(p)
    if os.path.isabs(p):
        return p
    bases = [b for b in (os.environ.get("PWD"), os.getcwd(), REPO_ROOT) if b]
    for b in bases:
        if os.path.exists(os.path.join(b, p)):
            return os.path.abspath(os.path.join(b, p))
    return os.path.abspath(os.path.join(bases[0], p))


def figures_dir(path: str) -> str:
    """The figures directory (relative paths as in ``resolve_path``), created if missing."""
    d = resolve_path(path)
    os.makedirs(d, exist_ok=True)
    return d


def save_figure(fig, name: str, directory: str, dpi: int = 110) -> str:
    """Saves ``fig`` as ``directory/name.png`` (stable names; see notebooks/README.md)."""
    path = os.path.join(directory, name if name.endswith(".png") else name + ".png")
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


# ---------------------------------------------------------------------------------------------------
# Routing trace of one text (`moe-dist route --h5 FILE`, issue 27)

def read_route_trace(path: str) -> dict[str, Any]:
    """A `moe-dist route --h5` file: tokens [N], pieces (text of each token), experts/gates/dropped [R, N, k],
    entropy [R, N] (nats), num_experts, and agreement [R-1] (shared pools; empty otherwise)."""
    with _open(path) as f:
        if _attr(f.attrs.get("format")) != "moe-dist/route":
            raise ValueError(f"{path}: not a moe-dist route file")
        out = {name: f[name][()] for name in ("tokens", "experts", "gates", "dropped", "entropy")}
        out["dropped"] = out["dropped"].astype(bool)
        out["agreement"] = f["agreement"][()] if "agreement" in f else np.zeros(0)
        out["pieces"] = json.loads(_attr(f.attrs["pieces"]))
        out["num_experts"] = int(f.attrs["num_experts"])
        out["checkpoint"] = _attr(f.attrs["checkpoint"])
    return out


def trace_agreement(experts: np.ndarray) -> np.ndarray:
    """Per token and pair of consecutive iterations, |K_r ∩ K_(r+1)| / k from experts [R, N, k]: [R-1, N]."""
    R, N, k = experts.shape
    out = np.zeros((max(R - 1, 0), N))
    for r in range(R - 1):
        for t in range(N):
            out[r, t] = len(set(experts[r, t]) & set(experts[r + 1, t])) / k
    return out

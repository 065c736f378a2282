"""The PyTorch module against moe-dist, on the runs scripts/test_export.sh prepares (MOE_EXPORT_CASES: one
directory per variant with run/, export/, eval.json, sample.json, route.json; MOE_EXPORT_DATA: token files).

    scripts/test_export.sh        # prepares the runs, then runs this file
"""
import glob
import json
import os

import h5py
import numpy as np
import pytest
import torch
from safetensors import safe_open

import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from moe_dist_torch import MoEDistModel, evaluate_tokens, generate, load_export, read_token_file  # noqa: E402

CASES = os.environ.get("MOE_EXPORT_CASES")
DATA = os.environ.get("MOE_EXPORT_DATA")
if not CASES or not DATA:
    raise RuntimeError("MOE_EXPORT_CASES and MOE_EXPORT_DATA are not set: run scripts/test_export.sh")
torch.set_grad_enabled(False)
torch.set_num_threads(1)   # a 2-core CI machine: torch's own thread pool only contends with itself
NAMES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(CASES, "*")) if os.path.isdir(p))
LOSS_TOLERANCE = 1e-4   # |PyTorch loss - moe-dist eval loss|: float32 forward, summation order differs
TIE = 1e-4              # logits closer than this may order either way in float32 (greedy, routing)


def case(name):
    return os.path.join(CASES, name)


def checkpoint(name):
    return glob.glob(os.path.join(case(name), "run", "checkpoints", "step-*.h5"))[0]


def test_all_variants_present():
    assert len(NAMES) >= 7, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_safetensors_holds_the_checkpoint_tensors(name):
    """model.safetensors loads with the safetensors package; every /params and /buffers tensor of the
    checkpoint (read with h5py) is there under its path with '/' -> '.', float32, equal bit for bit."""
    expected = {}
    with h5py.File(checkpoint(name), "r") as f:
        for group in ("params", "buffers"):
            if group in f:
                f[group].visititems(lambda p, o: expected.__setitem__(p.replace("/", "."), o[()]) if isinstance(o, h5py.Dataset) else None)
    with safe_open(os.path.join(case(name), "export", "model.safetensors"), framework="pt") as st:
        assert sorted(st.keys()) == sorted(expected)
        for key, want in expected.items():
            got = st.get_tensor(key)
            assert got.dtype == torch.float32
            assert list(got.shape) == list(want.shape), key
            assert np.array_equal(got.numpy(), want), key


@pytest.mark.parametrize("name", NAMES)
def test_loss_equals_moe_dist_eval(name):
    model = load_export(os.path.join(case(name), "export"))
    with open(os.path.join(case(name), "eval.json")) as fh:
        ref = json.load(fh)
    loss, scored = evaluate_tokens(model, read_token_file(os.path.join(DATA, "valid.tok")), max_tokens=2000)
    assert scored == ref["scored"]
    diff = abs(loss - ref["loss"])
    with open(os.path.join(CASES, "summary.txt"), "a") as fh:
        fh.write(f"{name:24s} torch loss {loss:.7f}  moe-dist eval {ref['loss']:.7f}  |diff| {diff:.2e}\n")
    assert diff <= LOSS_TOLERANCE, (loss, ref["loss"])


@pytest.mark.parametrize("name", NAMES)
def test_greedy_continuation_equals_moe_dist_sample(name):
    """40 greedy tokens from a 4-token prompt at seq_len 16: the window slides twice. A step where
    PyTorch's two best logits are within TIE ends the comparison (either may win in float32)."""
    model = load_export(os.path.join(case(name), "export"))
    with open(os.path.join(case(name), "sample.json")) as fh:
        ref = json.loads(fh.readline())
    got = generate(model, ref["prompt_ids"], len(ref["ids"]), temperature=0.0)
    T, keep = model.m["seq_len"], model.m["seq_len"] // 2
    window = ref["prompt_ids"][-T:]
    for i, (a, b) in enumerate(zip(got, ref["ids"])):
        top2 = torch.topk(model(torch.tensor([window]))[0, -1], 2).values
        if float(top2[0] - top2[1]) < TIE:
            return
        assert a == b, f"token {i}: torch {a}, moe-dist {b} ({got} vs {ref['ids']})"
        window = (window + [b])[-keep:] if len(window) == T else window + [b]
    assert len(got) == len(ref["ids"]) == 40


@pytest.mark.parametrize("name", [n for n in NAMES if n != "dense"])
def test_route_equals_torch_routing(name):
    """`moe-dist route --json` against PyTorch's router: the same experts, and gates within 1e-4, for every
    token whose k-th and (k+1)-th selection keys are more than TIE apart (closer ones may order either way).
    With a capacity factor, route drops assignments (the text is the micro-batch) and PyTorch is dropless,
    so only the first iteration is compared."""
    model = load_export(os.path.join(case(name), "export"))
    with open(os.path.join(case(name), "route.json")) as fh:
        ref = json.load(fh)
    ids = torch.tensor(ref["tokens"])
    dropped = np.array(ref["dropped"])
    assert dropped.shape == (model.m["depth"], len(ref["tokens"]), ref["top_k"])
    capacity = model.f["capacity_factor"] > 0
    if not capacity:
        assert not dropped.any()
    compared = 0
    for r, (experts, gates, margin) in enumerate(model.routing(ids)):
        if capacity and r > 0:
            break
        for t in range(len(ref["tokens"])):
            if float(margin[t]) <= TIE:
                continue
            assert list(experts[t].numpy()) == ref["experts"][r][t], (r, t)
            assert np.allclose(gates[t].numpy(), ref["gates"][r][t], atol=1e-4), (r, t)
            compared += 1
    assert compared >= len(ref["tokens"]) // 2, f"only {compared} tokens compared"

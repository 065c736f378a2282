#!/usr/bin/env python3
"""Generates Tests/Fixtures/training_fixtures.json: reference values for the optimizer, the learning-rate
schedule, gradient clipping and initialisation, computed with PyTorch (torch.optim.AdamW,
torch.nn.utils.clip_grad_norm_, torch.optim.lr_scheduler) and an independent Python version of the
SPEC section 2 initialisation. Run once (pip install torch==2.13.0+cpu); the JSON is committed and the
Swift tests (Tests/TrainingTests/PyTorchFixtureTests.swift) read it; they never need torch.

    python3 Tests/Fixtures/make_training_fixtures.py
"""
import json
import math
import os

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "training_fixtures.json")


def schedule_case(peak, min_ratio, warmup, total):
    """Learning rate of steps 0 ..< total: LinearLR warm-up then CosineAnnealingLR to peak·min_ratio."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=peak)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warmup, eta_min=peak * min_ratio)
    if warmup > 0:
        linear = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1)
        sched = torch.optim.lr_scheduler.SequentialLR(opt, [linear, cosine], milestones=[warmup])
    else:
        sched = cosine
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return {"peak": peak, "min_lr_ratio": min_ratio, "warmup_steps": warmup, "total_steps": total, "lr": lrs}


def adamw_case():
    """Five AdamW steps over three tensors (one with weight decay, a norm and depth_embed without), gradients
    clipped to a global norm of 1 with clip_grad_norm_ (some steps clip, some do not)."""
    rng = np.random.default_rng(12)
    shapes = {"blocks/0/wq": [3, 4], "blocks/0/attn_norm": [5], "depth_embed": [2, 3]}
    decays = {"blocks/0/wq": True, "blocks/0/attn_norm": False, "depth_embed": False}
    params = {k: torch.nn.Parameter(torch.tensor(rng.normal(0, 0.5, s), dtype=torch.float32)) for k, s in shapes.items()}
    initial = {k: p.detach().flatten().tolist() for k, p in params.items()}
    lr_peak, wd, clip = 1e-2, 0.1, 1.0
    opt = torch.optim.AdamW([
        {"params": [params[k] for k in shapes if decays[k]], "weight_decay": wd},
        {"params": [params[k] for k in shapes if not decays[k]], "weight_decay": 0.0},
    ], lr=lr_peak, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    steps = []
    for i in range(5):
        lr = lr_peak * (0.5 + 0.1 * i)
        for g in opt.param_groups:
            g["lr"] = lr
        size = [0.3, 2.0, 0.1, 5.0, 0.7][i]      # global norms below and above the clip threshold
        grads = {k: torch.tensor(rng.normal(0, size, shapes[k]), dtype=torch.float32) for k in shapes}
        for k, p in params.items():
            p.grad = grads[k].clone()
        norm = torch.nn.utils.clip_grad_norm_([params[k] for k in shapes], max_norm=clip).item()
        opt.step()
        steps.append({"lr": lr, "grads": {k: g.flatten().tolist() for k, g in grads.items()}, "grad_norm": norm,
                      "params_after": {k: p.detach().flatten().tolist() for k, p in params.items()}})
    return {"shapes": shapes, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": wd, "grad_clip": clip,
            "initial": initial, "steps": steps}


# --- SPEC section 2 initialisation, written again from the SPEC (SplitMix64, FNV-1a, Box-Muller) ---
M64 = (1 << 64) - 1


def splitmix_next(state):
    state = (state + 0x9E3779B97F4A7C15) & M64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return state, z ^ (z >> 31)


def stream(seed, path, expert):
    h = 0xCBF29CE484222325
    for b in path.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    state = (h ^ ((seed & M64) * 0x9E3779B97F4A7C15)) & M64
    state ^= (((expert + 1) & M64) * 0xD6E8FEB86659FD93) & M64
    state, _ = splitmix_next(state)
    return state


def normals(state, n):
    out = []
    for _ in range(n):
        state, a = splitmix_next(state)
        state, b = splitmix_next(state)
        u1 = ((a >> 11) + 1) * 2.0 ** -53
        u2 = ((b >> 11) + 1) * 2.0 ** -53
        out.append(torch.tensor(math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2), dtype=torch.float64).item())
    return out


def init_case():
    """Every tensor of a small MoE model (d 8, V 11, R 2, E 3, F 6, shared trunk and pool, depth embeddings)."""
    seed, d, V, R, E, F = 1234, 8, 11, 2, 3, 6
    tensors = [("embed", [V, d], False), ("depth_embed", [R, d], False), ("blocks/0/attn_norm", [d], False)]
    tensors += [(f"blocks/0/{w}", [d, d], False) for w in ["wq", "wk", "wv", "wo"]]
    tensors += [("blocks/0/ffn_norm", [d], False), ("ffn/0/router", [d, E], False),
                ("ffn/0/w1", [E, d, F], True), ("ffn/0/w2", [E, F, d], True), ("final_norm", [d], False)]
    values = {}
    for path, shape, is_expert in tensors:
        name = path.split("/")[-1]
        n = int(np.prod(shape))
        if name.endswith("norm"):
            values[path] = [1.0] * n
            continue
        if name == "depth_embed":
            values[path] = [0.0] * n
            continue
        std = 0.02 * ((1 / math.sqrt(2 * R)) if name in ("wo", "w2") else 1)
        if is_expert:
            row = n // shape[0]
            values[path] = [std * x for e in range(shape[0]) for x in normals(stream(seed, path, e), row)]
        else:
            values[path] = [std * x for x in normals(stream(seed, path, -1), n)]
    return {"seed": seed, "d_model": d, "vocab_size": V, "depth": R, "num_experts": E, "d_ff": F, "values": values}


def main():
    torch.manual_seed(0)
    fixtures = {
        "generator": f"Tests/Fixtures/make_training_fixtures.py with torch {torch.__version__}",
        "schedule": [schedule_case(3e-4, 0.1, 5, 20), schedule_case(1e-3, 0.0, 0, 10), schedule_case(2e-3, 0.5, 1, 7)],
        "adamw": adamw_case(),
        "init": init_case(),
    }
    with open(OUT, "w") as f:
        json.dump(fixtures, f, indent=1)
    print("wrote", OUT)


if __name__ == "__main__":
    main()

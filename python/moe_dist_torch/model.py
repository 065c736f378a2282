"""The recurrent MoE language model of moe-dist, in PyTorch, for every architecture and routing variant
its configuration allows (the `model` and `moe` keys of config.json):

    h = embed[x]
    for r in 0 ..< depth (block i = 0 if trunk == shared else r, pool p = 0 if experts == shared else r):
        h = h + depth_embed[r]                           (depth_embedding)
        h = h + Attn_i(RMSNorm(h; blocks.i.attn_norm))   (rotary "rotate half", causal)
        h = h + FFN_p(RMSNorm(h; blocks.i.ffn_norm))     (dense, or top-k routed experts)
    logits = RMSNorm(h; final_norm) @ (embed.T if tie_embeddings else lm_head)

Weights are stored [in, out] and applied as y = x @ W, float32, no biases. The module's state_dict keys are
the names in model.safetensors, so `load_state_dict(strict=True)` checks that nothing is missing or extra.
Routing is dropless (as moe-dist evaluates and samples): moe.capacity_factor only matters in training.
"""
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def rms_norm(x, weight, eps):
    # x is (..., d), weight (d)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def ffn(u, w1, w3, w2, activation):
    """gelu(u @ w1) @ w2 (tanh form) or (silu(u @ w1) * (u @ w3)) @ w2; u is (n, d)."""
    if activation == "gelu":
        return F.gelu(u @ w1, approximate="tanh") @ w2
    return (F.silu(u @ w1) * (u @ w3)) @ w2


class Block(nn.Module):
    """One attention block's tensors: blocks.i.{attn_norm, wq, wk, wv, wo, ffn_norm}."""

    def __init__(self, d):
        super().__init__()
        self.attn_norm = nn.Parameter(torch.ones(d))
        self.wq = nn.Parameter(torch.zeros(d, d))
        self.wk = nn.Parameter(torch.zeros(d, d))
        self.wv = nn.Parameter(torch.zeros(d, d))
        self.wo = nn.Parameter(torch.zeros(d, d))
        self.ffn_norm = nn.Parameter(torch.ones(d))


class Buffers(nn.Module):
    """Per-iteration selection biases: ffn.0.router_bias.<r>."""

    def __init__(self, count, E):
        super().__init__()
        for r in range(count):
            self.register_buffer(str(r), torch.zeros(E))

    def get(self, r):
        return getattr(self, str(r))


class Pool(nn.Module):
    """One feed-forward pool: ffn.p.{router | router.<r>, router_bias | router_bias.<r>, w1, w3, w2}."""

    def __init__(self, cfg, depth, d):
        super().__init__()
        m = cfg
        E, Fh = m["num_experts"], m["d_ff"]
        self.dense = E == 0
        swiglu = m["activation"] == "swiglu"
        if self.dense:
            self.w1 = nn.Parameter(torch.zeros(d, Fh))
            self.w3 = nn.Parameter(torch.zeros(d, Fh)) if swiglu else None
            self.w2 = nn.Parameter(torch.zeros(Fh, d))
            return
        self.per_iteration = m["routers"] == "per_iteration"
        if self.per_iteration:
            self.router = nn.ParameterList([nn.Parameter(torch.zeros(d, E)) for _ in range(depth)])
        else:
            self.router = nn.Parameter(torch.zeros(d, E))
        if m["router_bias_rate"] > 0:
            if self.per_iteration:
                self.router_bias = Buffers(depth, E)
            else:
                self.register_buffer("router_bias", torch.zeros(E))
        else:
            self.router_bias = None
        self.w1 = nn.Parameter(torch.zeros(E, d, Fh))
        self.w3 = nn.Parameter(torch.zeros(E, d, Fh)) if swiglu else None
        self.w2 = nn.Parameter(torch.zeros(E, Fh, d))

    def router_for(self, r):
        weight = self.router[r] if self.per_iteration else self.router
        if self.router_bias is None:
            bias = None
        else:
            bias = self.router_bias.get(r) if self.per_iteration else self.router_bias
        return weight, bias


class MoEDistModel(nn.Module):
    def __init__(self, config):
        """`config`: the parsed config.json of an export (its "model" and "moe" sections)."""
        super().__init__()
        m, f = config["model"], config["moe"]
        self.m, self.f = m, f
        d, V, R = m["d_model"], m["vocab_size"], m["depth"]
        self.embed = nn.Parameter(torch.zeros(V, d))
        self.depth_embed = nn.Parameter(torch.zeros(R, d)) if m["depth_embedding"] else None
        self.blocks = nn.ModuleList([Block(d) for _ in range(1 if m["trunk"] == "shared" else R)])
        self.ffn = nn.ModuleList([Pool(f, R, d) for _ in range(1 if f["experts"] == "shared" else R)])
        self.final_norm = nn.Parameter(torch.ones(d))
        self.lm_head = None if m["tie_embeddings"] else nn.Parameter(torch.zeros(d, V))
        # cos/sin of θ = t·base^(−2j/dh), computed in float64 and stored as float32 (as moe-dist does)
        dh = d // m["n_heads"]
        freq = torch.tensor([m["rope_base"] ** (-2.0 * j / dh) for j in range(dh // 2)], dtype=torch.float64)
        theta = torch.arange(m["seq_len"], dtype=torch.float64)[:, None] * freq[None, :]
        self.register_buffer("rope_cos", torch.cos(theta).float(), persistent=False)
        self.register_buffer("rope_sin", torch.sin(theta).float(), persistent=False)

    # -- parts -------------------------------------------------------------------------------------

    def rotate(self, x):
        # x is (B, T, H, dh); positions 0 ..< T
        T, half = x.shape[1], x.shape[3] // 2
        c, s = self.rope_cos[:T, None, :], self.rope_sin[:T, None, :]
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)

    def attention(self, a, blk):
        B, T, d = a.shape
        H = self.m["n_heads"]
        dh = d // H
        q = self.rotate((a @ blk.wq).view(B, T, H, dh)).transpose(1, 2)   # (B, H, T, dh)
        k = self.rotate((a @ blk.wk).view(B, T, H, dh)).transpose(1, 2)
        v = (a @ blk.wv).view(B, T, H, dh).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)                  # (B, H, T, T)
        mask = torch.ones(T, T, dtype=torch.bool, device=a.device).triu(1)
        probs = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
        out = (probs @ v).transpose(1, 2).reshape(B, T, d)
        return out @ blk.wo

    def route(self, u, r, pool):
        """Top-k experts and gates of rows u (n, d) at iteration r: (experts (n, k), gates (n, k), probs (n, E),
        selection keys (n, E))."""
        f = self.f
        weight, bias = pool.router_for(r)
        z = u @ weight                                                       # (n, E)
        if f["router_score"] == "sigmoid":
            S = torch.sigmoid(z)
            P = S / S.sum(-1, keepdim=True)
        else:
            S = P = torch.softmax(z, dim=-1)
        key = S if bias is None else S + bias
        # descending, ties to the lower expert index (a stable sort keeps index order among equal keys)
        experts = torch.sort(key, dim=-1, descending=True, stable=True).indices[:, : f["top_k"]]
        gates = torch.gather(S, 1, experts)
        if f["normalize_gates"] and f["top_k"] > 1:
            gates = gates / gates.sum(-1, keepdim=True)
        return experts, gates, P, key

    def moe(self, u, r, pool):
        # u is (n, d); dropless: every assignment runs
        experts, gates, _, _ = self.route(u, r, pool)
        out = torch.zeros_like(u)
        for e in range(self.f["num_experts"]):
            rows, slot = (experts == e).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            y = ffn(u[rows], pool.w1[e], None if pool.w3 is None else pool.w3[e], pool.w2[e], self.f["activation"])
            out.index_add_(0, rows, gates[rows, slot, None] * y)
        return out

    # -- model -------------------------------------------------------------------------------------

    def forward(self, idx, targets=None):
        """idx (B, T) token ids, T <= model.seq_len -> logits (B, T, V); with targets, also the mean
        cross-entropy over every target."""
        m, eps = self.m, self.m["norm_eps"]
        B, T = idx.shape
        assert T <= m["seq_len"], f"{T} tokens, more than model.seq_len {m['seq_len']}"
        h = self.embed[idx]
        for r in range(m["depth"]):
            blk = self.blocks[0 if len(self.blocks) == 1 else r]
            pool = self.ffn[0 if len(self.ffn) == 1 else r]
            if self.depth_embed is not None:
                h = h + self.depth_embed[r]
            h = h + self.attention(rms_norm(h, blk.attn_norm, eps), blk)
            u = rms_norm(h, blk.ffn_norm, eps).reshape(B * T, -1)
            if pool.dense:
                y = ffn(u, pool.w1, pool.w3, pool.w2, self.f["activation"])
            else:
                y = self.moe(u, r, pool)
            h = h + y.view(B, T, -1)
        x = rms_norm(h, self.final_norm, eps)
        logits = x @ (self.embed.t() if self.lm_head is None else self.lm_head)
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def routing(self, idx):
        """For one sequence idx (T,): per iteration r, the experts (T, k) and gates (T, k) of every token and the
        margin of its choice (T,): the k-th largest selection key minus the (k+1)-th (inf when k = E)."""
        m, eps = self.m, self.m["norm_eps"]
        h = self.embed[idx[None]]
        out = []
        for r in range(m["depth"]):
            blk = self.blocks[0 if len(self.blocks) == 1 else r]
            pool = self.ffn[0 if len(self.ffn) == 1 else r]
            if self.depth_embed is not None:
                h = h + self.depth_embed[r]
            h = h + self.attention(rms_norm(h, blk.attn_norm, eps), blk)
            u = rms_norm(h, blk.ffn_norm, eps).reshape(h.shape[1], -1)
            experts, gates, _, key = self.route(u, r, pool)
            k = experts.shape[1]
            ranked = torch.sort(key, dim=-1, descending=True).values
            margin = ranked[:, k - 1] - ranked[:, k] if k < key.shape[1] else torch.full((key.shape[0],), float("inf"))
            out.append((experts, gates, margin))
            h = h + self.moe(u, r, pool).view(h.shape)
        return out


def load_export(directory, device="cpu"):
    """The model of a `moe-dist export` directory, weights loaded (strict: every name must match)."""
    from safetensors.torch import load_file

    with open(os.path.join(directory, "config.json")) as fh:
        config = json.load(fh)
    if config.get("format") != "moe-dist/export":
        raise ValueError(f"{directory}/config.json: not a moe-dist export (format {config.get('format')!r})")
    model = MoEDistModel(config)
    model.load_state_dict(load_file(os.path.join(directory, "model.safetensors")), strict=True)
    return model.to(device).eval()


def read_token_file(path):
    """A moe-dist token file (64-byte header MOETOKS1, then little-endian uint16 or uint32 ids) as int64."""
    with open(path, "rb") as fh:
        header = fh.read(64)
        if header[:8] != b"MOETOKS1":
            raise ValueError(f"{path}: not a moe-dist token file")
        width = int.from_bytes(header[12:16], "little")
        count = int.from_bytes(header[16:24], "little")
        data = np.frombuffer(fh.read(count * width), dtype="<u2" if width == 2 else "<u4")
    return torch.from_numpy(data.astype(np.int64))


@torch.no_grad()
def evaluate_tokens(model, tokens, max_tokens=None):
    """moe-dist's evaluation: windows start at 0, T, 2T, ...; the first M tokens give M - 1 scored targets.
    Returns (mean NLL, scored targets)."""
    T = model.m["seq_len"]
    M = len(tokens) if max_tokens is None else min(max_tokens, len(tokens))
    total, scored = 0.0, 0
    for s in range(0, M - 1, T):
        e = min(s + T, M - 1)
        x, y = tokens[s:e][None], tokens[s + 1 : e + 1][None]
        logits = model(x)
        nll = F.cross_entropy(logits[0].double(), y[0], reduction="sum")
        total += float(nll)
        scored += e - s
    return total / scored, scored


@torch.no_grad()
def generate(model, prompt, max_new_tokens, temperature=0.0, top_k=0, top_p=1.0, generator=None):
    """Tokens after `prompt` (a list of ids) with moe-dist's window rule: the model sees at most the last
    model.seq_len tokens; when the window is full it slides to its newest seq_len // 2 tokens.
    temperature 0 is greedy. (No key/value cache: each step recomputes the window.)"""
    T = model.m["seq_len"]
    keep = max(1, T // 2)
    window = list(prompt)[-T:]
    out = []
    while len(out) < max_new_tokens:
        logits = model(torch.tensor([window]))[0, -1]
        if temperature <= 0:
            nxt = int(torch.argmax(logits))   # first maximum: ties to the lower id
        else:
            probs = torch.softmax(logits.double() / temperature, dim=-1)
            order = torch.argsort(probs, descending=True, stable=True)
            if top_k > 0:
                order = order[:top_k]
            p = probs[order] / probs[order].sum()
            if top_p < 1.0:
                cut = int(torch.searchsorted(torch.cumsum(p, 0), torch.tensor(top_p, dtype=p.dtype))) + 1
                order, p = order[:cut], p[:cut] / p[:cut].sum()
            nxt = int(order[torch.multinomial(p, 1, generator=generator)])
        out.append(nxt)
        if len(window) == T:
            window = (window + [nxt])[-keep:]
        else:
            window.append(nxt)
    return out

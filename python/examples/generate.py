#!/usr/bin/env python3
"""Generate text from a `moe-dist export` directory with PyTorch and Hugging Face `tokenizers`.

    python3 python/examples/generate.py exports/wt2-cpu-small --prompt " The history of the" \
        --max-new-tokens 40 --temperature 0.8 --top-k 40
"""
import argparse
import os
import sys

import torch
from tokenizers import Tokenizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from moe_dist_torch import generate, load_export  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export_dir")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--max-new-tokens", type=int, default=50)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    tokenizer = Tokenizer.from_file(os.path.join(args.export_dir, "tokenizer.json"))
    model = load_export(args.export_dir)
    prompt = tokenizer.encode(args.prompt).ids
    if not prompt:
        sys.exit("the prompt encodes to no tokens")
    gen = torch.Generator().manual_seed(args.seed)
    new = generate(model, prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p, generator=gen)
    # WikiText's <unk> is a special token: keep it (tokenizers drops special tokens by default)
    print(tokenizer.decode(prompt + new, skip_special_tokens=False))


if __name__ == "__main__":
    main()

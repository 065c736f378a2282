#!/usr/bin/env python3
"""Reference runs of Hugging Face `tokenizers` for moe-dist tests and benchmarks.

  hf_tokenize.py encode TOKENIZER TEXT OUT.i32     ids of the whole file (one string), int32 LE
  hf_tokenize.py encode-json TOKENIZER IN.json OUT.json
                                                   IN: list of strings; OUT: list of id lists
  hf_tokenize.py pretokenize-json IN.json OUT.json
                                                   ByteLevel(add_prefix_space=False) pre-tokens of
                                                   each string, in byte-level spelling
  hf_tokenize.py bench TOKENIZER TEXT              times (1) encode_batch over the file's lines
                                                   (newlines kept, so the bytes are the same) and
                                                   (2) encode of the whole file as one string;
                                                   prints "bytes s_lines n_lines s_whole n_whole",
                                                   encode calls only (no file reading or loading)
  hf_tokenize.py train TEXT VOCAB OUT.json         HF BpeTrainer with a ByteLevel pre-tokenizer;
                                                   prints training seconds

Exit status 3 if `tokenizers` cannot be imported (tests skip on it).
"""
import json
import os
import sys
import time
from array import array

try:
    from tokenizers import Tokenizer
except Exception as e:  # noqa: BLE001
    print(f"cannot import tokenizers: {e}", file=sys.stderr)
    sys.exit(3)


def read_text(path):
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def main(argv):
    cmd = argv[1]
    if cmd == "encode":
        tok = Tokenizer.from_file(argv[2])
        ids = tok.encode(read_text(argv[3])).ids
        with open(argv[4], "wb") as f:
            a = array("i", ids)
            if sys.byteorder != "little":
                a.byteswap()
            a.tofile(f)
    elif cmd == "encode-json":
        tok = Tokenizer.from_file(argv[2])
        with open(argv[3], encoding="utf-8") as f:
            texts = json.load(f)
        with open(argv[4], "w") as f:
            json.dump([tok.encode(t).ids for t in texts], f)
    elif cmd == "pretokenize-json":
        from tokenizers import pre_tokenizers
        pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        with open(argv[2], encoding="utf-8") as f:
            texts = json.load(f)
        with open(argv[3], "w") as f:
            json.dump([[p for p, _ in pre.pre_tokenize_str(t)] for t in texts], f)
    elif cmd == "bench":
        tok = Tokenizer.from_file(argv[2])
        text = read_text(argv[3])
        lines = text.splitlines(keepends=True)
        t0 = time.perf_counter()
        out = tok.encode_batch(lines, add_special_tokens=False)
        t_lines = time.perf_counter() - t0
        n_lines = sum(len(e.ids) for e in out)
        del out
        t0 = time.perf_counter()
        n_whole = len(tok.encode(text, add_special_tokens=False).ids)
        t_whole = time.perf_counter() - t0
        print(f"{len(text.encode('utf-8'))} {t_lines:.4f} {n_lines} {t_whole:.4f} {n_whole}")
    elif cmd == "train":
        from tokenizers import models, pre_tokenizers, decoders, trainers
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=int(argv[3]), special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        t0 = time.perf_counter()
        tok.train([argv[2]], trainer)
        print(f"{time.perf_counter() - t0:.3f}")
        tok.save(argv[4])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv)

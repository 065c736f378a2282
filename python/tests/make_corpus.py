#!/usr/bin/env python3
"""A small English-like text corpus for the export tests: OUT/train.txt and OUT/valid.txt (fixed seed)."""
import random
import sys

out = sys.argv[1]
rng = random.Random(1)
nouns = "cat dog king queen river city house tree bird ship horse village mountain".split()
verbs = "sat ran saw found built crossed left ruled watched".split()
adjs = "old new big small red blue quiet famous".split()


def sentence():
    parts = ["The", rng.choice(adjs), rng.choice(nouns), rng.choice(verbs), "the", rng.choice(nouns)]
    if rng.random() < 0.5:
        parts += ["of", "the", rng.choice(adjs), rng.choice(nouns)]
    return " " + " ".join(parts) + " ."


for name, n in [("train", 2500), ("valid", 200)]:
    with open(f"{out}/{name}.txt", "w") as fh:
        for _ in range(n):
            fh.write(sentence() + ("\n" if rng.random() < 0.3 else ""))
        fh.write("\n")

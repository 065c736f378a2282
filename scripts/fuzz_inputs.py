#!/usr/bin/env python3
"""Fuzzes every file a user hands to moe-dist through the real CLI (issue 24).

For each input kind it mutates a valid file (truncations, bit flips, huge or negative sizes, wrong
types, wrong magic and version, deleted or reshaped HDF5 objects), runs the command that reads it, and
checks the outcome against an independent oracle:

  token       eval --checkpoint CK --data MUT: a file that still parses as SPEC section 8 says (this
              script's own reader) with the checkpoint's vocabulary and fingerprint must score (0);
              any other must be refused with exit 3.
  checkpoint  eval --checkpoint MUT / ckpt inspect MUT: exit 3, or exit 0 with exactly the output of the
              intact checkpoint (anything else is a silently wrong result).
  metrics     curves RUN / compare RUN: exit 3 if h5py cannot read the history's datasets; exit 0 with the
              intact output if h5py reads the same values. Every chunk has a Fletcher-32 checksum, every
              string attribute a CRC-32 (checked here as moe-dist does) and the object headers HDF5
              1.8's checksums, so a flipped byte in a value is refused by both; what still reads with other values is a valid
              HDF5 edit (a dataset replaced, resized or retyped through h5py, which writes it afresh):
              it may give 0 with other numbers and is listed, with its seed, as undetectable.
  tokenizer   data encode --tokenizer MUT: exit 3 if the file is not JSON; else 0 or 3.
  config      config --config MUT: 0 or 2.

Every case must end in one of those statuses, within the time limit, with (when refused) exactly one
`moe-dist:` line that names the file (or, for a configuration value, its key). A crash (a signal,
"Program crashed", "Fatal error"), a hang, a second error line or a wrong result fails the case; its
(kind, seed) is printed, and kept in scripts/fuzz_regressions.txt it runs first on every later run.

Usage:
  python3 scripts/fuzz_inputs.py                     # 1000 cases per input (the full count)
  python3 scripts/fuzz_inputs.py --cases 40          # CI: a seeded subset, plus the regressions
  python3 scripts/fuzz_inputs.py --kind token --seed 7 --cases 1 --keep /tmp/case   # one case, kept
  MOE_DIST_BIN=.build/release/moe-dist python3 scripts/fuzz_inputs.py   # another binary (e.g. ASan)
"""
import argparse
import concurrent.futures as cf
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REGRESSIONS = REPO / "scripts" / "fuzz_regressions.txt"
KINDS = ["token", "checkpoint", "metrics", "tokenizer", "config"]
ENV = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMPI_MCA_rmaps_base_oversubscribe="1")


def run(binary, args, timeout, cwd=None):
    start = time.time()
    try:
        p = subprocess.run([binary] + args, capture_output=True, text=True, errors="replace", timeout=timeout,
                           env=ENV, cwd=cwd, start_new_session=True)
        return p.returncode, p.stdout, p.stderr, time.time() - start
    except subprocess.TimeoutExpired as e:
        return None, e.stdout or "", e.stderr or "", time.time() - start


# MARK: - the valid inputs

TEXT_WORDS = ("the of and to in a is was for on as with by he at from his an were are which this also be has "
              "had first one their its new after who they have her she two been other when there all during "
              "into school time may years more most only over city some world would where later up such used "
              "many can state about national out known university united then made").split()


def make_text(rng, words):
    lines = []
    for _ in range(words // 12):
        lines.append(" ".join(rng.choice(TEXT_WORDS) for _ in range(12)) + " .")
    return "\n".join(lines) + "\n"


def prepare(binary, work):
    """Tokenizer, token files, a checkpoint and a history from one small run; the intact outputs."""
    rng = random.Random(1)
    (work / "train.txt").write_text(make_text(rng, 30000))
    (work / "valid.txt").write_text(make_text(rng, 3000))
    s, _, err, _ = run(binary, ["data", "prepare", "--train", str(work / "train.txt"), "--valid", str(work / "valid.txt"),
                                "--vocab-size", "300", "--out", str(work / "data")], 300)
    if s != 0:
        sys.exit(f"fuzz_inputs: data prepare failed ({s}): {err}")
    cfg = work / "config.yaml"
    cfg.write_text((REPO / "jobs/configs/tiny.yaml").read_text())
    s, _, err, _ = run(binary, ["train", "--config", str(cfg), "--run-dir", str(work / "run"),
                                f"data.train={work}/data/train.tok", f"data.valid={work}/data/valid.tok",
                                f"data.tokenizer={work}/data/tokenizer.json", "train.max_steps=6", "train.log_interval=2",
                                "train.eval_interval=3", "train.eval_tokens=256", "train.checkpoint_interval=6"], 300)
    if s != 0:
        sys.exit(f"fuzz_inputs: the reference run failed ({s}): {err}")
    return work


class Inputs:
    def __init__(self, binary, work):
        self.binary, self.work = binary, work
        self.tok = work / "data/valid.tok"
        self.tokenizer = work / "data/tokenizer.json"
        self.ckpt = sorted((work / "run/checkpoints").glob("step-*.h5"))[-1]   # step 6 (a wrapper may shorten runs)
        self.run_dir = work / "run"
        self.config = work / "config.yaml"
        self.valid_text = work / "valid.txt"
        header = self.tok.read_bytes()[:64]
        self.vocab = struct.unpack_from("<I", header, 24)[0]
        self.fingerprint = struct.unpack_from("<Q", header, 28)[0]
        self.eval_out = self.check_intact(["eval", "--checkpoint", str(self.ckpt), "--data", str(self.tok), "--max-tokens", "200", "--json"])
        self.inspect_out = self.check_intact(["ckpt", "inspect", str(self.ckpt)])
        self.curves_out = self.check_intact(["curves", str(self.run_dir), "--format", "csv"])
        self.compare_out = self.check_intact(["compare", str(self.run_dir), "--json"])

    def check_intact(self, args):
        s, out, err, _ = run(self.binary, args, 120)
        if s != 0:
            sys.exit(f"fuzz_inputs: {' '.join(args)} fails on the intact input ({s}): {err}")
        return out


# MARK: - mutations

EXTREMES = [0, 1, 0xFF, 0x7F, 0x80, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0x7FFF_FFFF_FFFF_FFFF,
            0x8000_0000_0000_0000, 0xFFFF_FFFF_FFFF_FFFF]


def mutate_bytes(rng, data, fields=()):
    """One or more byte-level mutations; `fields` are (offset, size) of known integer fields."""
    b = bytearray(data)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        op = rng.choice(["truncate", "flip", "flip", "field", "field", "zero", "insert", "delete", "append"])
        if op == "truncate" and len(b) > 0:
            del b[rng.randrange(len(b)):]
        elif op == "flip" and len(b) > 0:
            for _ in range(rng.choice([1, 1, 2, 8])):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
        elif op == "field" and len(b) >= 8:
            off, size = rng.choice(fields) if fields and rng.random() < 0.7 else (rng.randrange(len(b) - 8), rng.choice([1, 2, 4, 8]))
            value = rng.choice(EXTREMES + [rng.getrandbits(size * 8)]) & ((1 << (size * 8)) - 1)
            if off + size <= len(b):
                b[off:off + size] = value.to_bytes(size, "little")
        elif op == "zero" and len(b) > 0:
            i = rng.randrange(len(b))
            n = rng.randrange(1, 512)
            b[i:i + n] = bytes(len(b[i:i + n]))
        elif op == "insert":
            i = rng.randrange(len(b) + 1)
            b[i:i] = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 16)))
        elif op == "delete" and len(b) > 0:
            i = rng.randrange(len(b))
            del b[i:i + rng.randrange(1, 16)]
        elif op == "append":
            b += bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64)))
    return bytes(b)


TOKEN_FIELDS = [(0, 8), (8, 4), (12, 4), (16, 8), (24, 4), (28, 8)]


def token_file_is_valid(data, vocab, fingerprint):
    """SPEC section 8, independently: would `eval` with a checkpoint of vocab and fingerprint score it?"""
    if len(data) < 64 or data[:8] != b"MOETOKS1":
        return False
    version, bpt, count, v, fp = struct.unpack_from("<IIQIQ", data, 8)
    if version != 1 or bpt not in (2, 4) or v == 0 or (bpt == 2 and v > 65536):
        return False
    if len(data) - 64 != count * bpt or count < 2:
        return False
    if v != vocab or (fp != 0 and fingerprint != 0 and fp != fingerprint):
        return False
    fmt = "<%d%s" % (count, "H" if bpt == 2 else "I")
    return max(struct.unpack_from(fmt, data, 64)) < v


def h5_structural(rng, path):
    """A structured HDF5 mutation with h5py: delete, reshape, retype an object or an attribute."""
    import h5py
    import numpy as np
    with h5py.File(path, "r+") as f:
        names = []
        f.visit(names.append)
        datasets = [n for n in names if isinstance(f[n], h5py.Dataset)]
        holders = [f] + [f[n] for n in names]
        op = rng.choice(["del", "reshape", "retype", "attr", "attr", "attr", "delattr"])
        if op == "del" and names:
            del f[rng.choice(names)]
        elif op in ("reshape", "retype") and datasets:
            n = rng.choice(datasets)
            old = f[n][()]
            del f[n]
            if op == "reshape":
                shape = rng.choice([(0,), (1,), (old.size + 1,), (3, 5), ()])
                f.create_dataset(n, data=np.zeros(shape, dtype=old.dtype)) if shape != () else f.create_dataset(n, data=old.dtype.type(0))
            else:
                dtype = rng.choice(["i1", "i8", "f8", "u2", h5py.string_dtype()])
                f.create_dataset(n, data=np.zeros(old.shape, dtype=dtype) if not isinstance(dtype, np.dtype) or dtype.kind != "O" else ["x"] * max(old.size, 1))
        elif op in ("attr", "delattr"):
            h = rng.choice(holders)
            # not the checksums' own <name>_crc32 (a changed one is refused like its string): leaving them out
            # keeps the choice, and so the kept seeds, as they were before the checksums were added
            keys = [k for k in h.attrs.keys() if not k.endswith("_crc32")]
            if not keys:
                return
            k = rng.choice(keys)
            if op == "delattr":
                del h.attrs[k]
                return
            v = h.attrs[k]
            if isinstance(v, (bytes, str)) and rng.random() < 0.6:
                s = v.decode() if isinstance(v, bytes) else v
                h.attrs[k] = mutate_json_text(rng, s)
            else:
                h.attrs[k] = rng.choice([np.int64(-1), np.int64(2**62), np.int64(0), np.float64("nan"), "text",
                                         np.int32(7), np.array([1, 2, 3]), np.int64(rng.randrange(-5, 5))])


def mutate_json_text(rng, s):
    """A JSON text with one value changed (wrong type, huge or negative number, removed key), or damaged."""
    try:
        obj = json.loads(s)
    except Exception:
        return mutate_bytes(rng, s.encode()).decode("latin-1")
    if rng.random() < 0.2:
        return mutate_bytes(rng, s.encode()).decode("latin-1")
    paths = []

    def walk(o, p):
        if isinstance(o, dict):
            for k, v in o.items():
                paths.append(p + [k]); walk(v, p + [k])
        elif isinstance(o, list) and o:
            for i in rng.sample(range(len(o)), min(3, len(o))):
                paths.append(p + [i]); walk(o[i], p + [i])
    walk(obj, [])
    if not paths:
        return "[]"
    p = rng.choice(paths)
    parent = obj
    for k in p[:-1]:
        parent = parent[k]
    if rng.random() < 0.15 and isinstance(parent, dict):
        del parent[p[-1]]
    else:
        parent[p[-1]] = rng.choice([-1, 0, 2**31, 2**63 - 1, -2**63, 1e308, "text", None, True, [], {}, [1, "x"],
                                     rng.randrange(-1000, 100000), 0.5])
    return json.dumps(obj)


def mutate_yaml(rng, text):
    lines = text.split("\n")
    values = [i for i, l in enumerate(lines) if re.match(r"^\s+[a-z_]+:\s*\S", l)]
    op = rng.choice(["value", "value", "value", "bytes", "dup", "drop", "indent", "key"])
    if op == "bytes" or not values:
        return mutate_bytes(rng, text.encode()).decode("latin-1")
    i = rng.choice(values)
    key, _, _ = lines[i].partition(":")
    if op == "value":
        v = rng.choice(["-1", "0", "99999999999999999999", "1e309", "-1e-300", "nan", ".inf", "text", "[1, 2]",
                        "{a: 1}", "null", "true", "''", "2.5", "0x10", "~", "&a 1", "*b", "!!binary aGk=", "9223372036854775808",
                        "-9223372036854775809", "1_000"])
        lines[i] = f"{key}: {v}"
    elif op == "dup":
        lines.insert(i, lines[i])
    elif op == "drop":
        del lines[i]
    elif op == "indent":
        lines[i] = "  " + lines[i] if rng.random() < 0.5 else lines[i].lstrip()
    else:
        lines[i] = f"{key}x: 1"
    return "\n".join(lines)


# MARK: - one case

ALLOWED = {"token": {0, 3}, "checkpoint": {0, 3}, "metrics": {0, 3}, "tokenizer": {0, 3}, "config": {0, 2}}


def check_case(kind, seed, inputs, timeout, keep=None):
    """Runs one case; returns (ok, note). note says what went wrong, or 'undetectable' for a changed value."""
    rng = random.Random(f"{kind}:{seed}")
    case = Path(tempfile.mkdtemp(prefix=f"moe-fuzz-{kind}-{seed}-"))
    try:
        expect = ALLOWED[kind]
        must_fail = False
        same_output = None       # (expected stdout, how to normalise)
        undetectable = False
        if kind == "token":
            mut = case / "mut.tok"
            mut.write_bytes(mutate_bytes(rng, inputs.tok.read_bytes(), TOKEN_FIELDS))
            must_fail = not token_file_is_valid(mut.read_bytes(), inputs.vocab, inputs.fingerprint)
            args, named = ["eval", "--checkpoint", str(inputs.ckpt), "--data", str(mut), "--max-tokens", "200", "--json"], str(mut)
        elif kind == "checkpoint":
            mut = case / "mut.h5"
            shutil.copy(inputs.ckpt, mut)
            if rng.random() < 0.5:
                mut.write_bytes(mutate_bytes(rng, mut.read_bytes()))
            else:
                try:
                    h5_structural(rng, mut)
                except Exception:
                    mut.write_bytes(mutate_bytes(rng, inputs.ckpt.read_bytes()))
            if rng.random() < 0.5:
                args = ["eval", "--checkpoint", str(mut), "--data", str(inputs.tok), "--max-tokens", "200", "--json"]
                same_output = inputs.eval_out.replace(str(inputs.ckpt), str(mut))
            else:
                args = ["ckpt", "inspect", str(mut)]
                same_output = inputs.inspect_out.replace(str(inputs.ckpt), str(mut))
            named = str(mut)
        elif kind == "metrics":
            run_dir = case / "run"
            run_dir.mkdir()
            shutil.copy(inputs.run_dir / "metrics.h5", run_dir / "metrics.h5")
            shutil.copy(inputs.run_dir / "config.yaml", run_dir / "config.yaml")
            mut = run_dir / "metrics.h5"
            how = "bytes"
            if rng.random() < 0.5:
                mut.write_bytes(mutate_bytes(rng, mut.read_bytes()))
            else:
                try:
                    h5_structural(rng, mut)
                    how = "edit"
                except Exception:
                    mut.write_bytes(mutate_bytes(rng, (inputs.run_dir / "metrics.h5").read_bytes()))
            readable, same = h5_compare(inputs.run_dir / "metrics.h5", mut)
            # No must-fail oracle here: h5py's HDF5 (2.x) and moe-dist's (1.10) differ in what damage they
            # tolerate, and a damaged object moe-dist does not read may go unnoticed. Crashes, hangs and
            # wrong results on a file h5py reads unchanged are still failures.
            if rng.random() < 0.5:
                args = ["curves", str(run_dir), "--format", "csv"]
                intact = inputs.curves_out
            else:
                args = ["compare", str(run_dir), "--json"]
                intact = inputs.compare_out.replace(str(inputs.run_dir), str(run_dir))
            if readable and same:
                same_output = intact
            elif readable:
                undetectable = how
            named = str(mut)
        elif kind == "tokenizer":
            mut = case / "tokenizer.json"
            text = inputs.tokenizer.read_text()
            mut.write_text(mutate_json_text(rng, text) if rng.random() < 0.6 else mutate_bytes(rng, text.encode()).decode("latin-1"),
                           encoding="latin-1")
            try:
                json.loads(mut.read_bytes())
            except Exception:
                must_fail = True
            args, named = ["data", "encode", "--tokenizer", str(mut), "--input", str(inputs.valid_text), "--out", str(case / "out.tok")], str(mut)
        else:
            mut = case / "config.yaml"
            mut.write_text(mutate_yaml(rng, inputs.config.read_text()), encoding="latin-1")
            args, named = ["config", "--config", str(mut)], str(mut)

        status, out, err, seconds = run(inputs.binary, args, timeout)
        if keep:
            shutil.copytree(case, keep, dirs_exist_ok=True)
        problems = []
        if status is None:
            problems.append(f"hang: no exit within {timeout} s")
        elif status < 0 or status >= 128 or "Program crashed" in err or "Fatal error" in err:
            problems.append(f"crash: status {status}")
        elif status not in expect:
            problems.append(f"status {status}, expected one of {sorted(expect)}")
        elif must_fail and status == 0:
            problems.append("accepted a damaged input (status 0)")
        if status not in (None, 0) and not problems:
            errors = [l for l in err.splitlines() if l.startswith("moe-dist") and "warning" not in l]
            if len(errors) != 1:
                problems.append(f"{len(errors)} error lines")
            elif named not in errors[0] and not (kind == "config" and re.search(r"\b[a-z]+\.[a-z_]+\b", errors[0])):
                problems.append("the message does not name the file")
        if status == 0 and same_output is not None and out != same_output:
            problems.append("exit 0 with another result than the intact input's (silently wrong)")
        if status == 0 and kind == "tokenizer" and not (case / "out.tok").exists():
            problems.append("exit 0 without the output file")
        if problems:
            return False, "; ".join(problems) + f" | {' '.join(args)} | stderr: {err.strip()[-600:]}", seconds
        return True, f"undetectable {undetectable}" if undetectable and status == 0 else "", seconds
    finally:
        shutil.rmtree(case, ignore_errors=True)


def h5_opens(p):
    import h5py
    try:
        with h5py.File(p, "r") as f:
            f.attrs.keys()
        return True
    except Exception:
        return False


def h5_compare(a, b):
    """(h5py reads every dataset of b, b's datasets and root attributes equal a's)."""
    import h5py
    import numpy as np

    def load(p):
        out = {}
        with h5py.File(p, "r") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    out[name] = obj[()]
                out["@" + name] = {k: obj.attrs[k] for k in obj.attrs}
            f.visititems(visit)
            out["@/"] = {k: f.attrs[k] for k in f.attrs}
        for attrs in (v for k, v in out.items() if k.startswith("@")):   # a string must match its <name>_crc32
            for k, v in attrs.items():
                if isinstance(v, str) and k + "_crc32" in attrs and zlib.crc32(v.encode()) != attrs[k + "_crc32"]:
                    raise ValueError(f"@{k} fails its CRC-32")
        return out
    try:
        mb = load(b)
    except Exception:
        return False, False
    ma = load(a)

    def eq(x, y):
        try:
            if isinstance(x, dict) or isinstance(y, dict):
                return isinstance(x, dict) and isinstance(y, dict) and x.keys() == y.keys() and all(eq(x[k], y[k]) for k in x)
            x, y = np.asarray(x), np.asarray(y)
            if x.dtype != y.dtype or x.shape != y.shape:
                return False
            return np.array_equal(x, y, equal_nan=x.dtype.kind in "fc")
        except Exception:
            return False
    return True, ma.keys() == mb.keys() and all(eq(ma[k], mb[k]) for k in ma)


# MARK: - driver

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=1000, help="cases per input kind (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="first seed (cases use seed, seed+1, ...)")
    ap.add_argument("--kind", action="append", choices=KINDS, help="only these kinds (repeatable)")
    ap.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    ap.add_argument("--timeout", type=float, default=60, help="seconds before a case counts as a hang (default 60)")
    ap.add_argument("--keep", help="copy the case's files here (with one --kind and --cases 1)")
    ap.add_argument("--no-regressions", action="store_true", help="skip scripts/fuzz_regressions.txt")
    a = ap.parse_args()
    binary = str(Path(os.environ.get("MOE_DIST_BIN", REPO / ".build/debug/moe-dist")).resolve())
    if not os.access(binary, os.X_OK):
        sys.exit(f"fuzz_inputs: FAIL: no moe-dist binary at {binary} (swift build, or set MOE_DIST_BIN)")
    kinds = a.kind or KINDS
    work = Path(tempfile.mkdtemp(prefix="moe-fuzz-inputs-"))
    try:
        started = time.time()
        inputs = Inputs(binary, prepare(binary, work))
        cases = []
        if not a.no_regressions and REGRESSIONS.exists():
            for line in REGRESSIONS.read_text().splitlines():
                parts = line.split("#")[0].split()
                if len(parts) == 2 and parts[0] in kinds:
                    cases.append((parts[0], int(parts[1])))
        cases += [(k, s) for k in kinds for s in range(a.seed, a.seed + a.cases)]
        print(f"fuzz_inputs: {binary}: {len(cases)} cases ({a.cases} per kind of {', '.join(kinds)}"
              f"{', plus regressions' if len(cases) > a.cases * len(kinds) else ''}), set-up {time.time() - started:.1f} s",
              flush=True)
        failures, counts, undetectable, times = [], {}, {}, {}
        with cf.ThreadPoolExecutor(max_workers=a.jobs) as pool:
            futures = {pool.submit(check_case, k, s, inputs, a.timeout, a.keep): (k, s) for k, s in cases}
            for n, fut in enumerate(cf.as_completed(futures), 1):
                k, s = futures[fut]
                ok, note, seconds = fut.result()
                counts[k] = counts.get(k, 0) + 1
                times[k] = times.get(k, 0) + seconds
                if note.startswith("undetectable"):
                    undetectable.setdefault(k, []).append(f"{s} ({note.split()[1]})")
                if not ok:
                    failures.append((k, s, note))
                    print(f"FAIL {k} {s}: {note}", flush=True)
                if n % 200 == 0:
                    print(f"  {n}/{len(cases)} cases, {len(failures)} failed, {time.time() - started:.0f} s", flush=True)
        for k in kinds:
            print(f"  {k:10s} {counts.get(k, 0):5d} cases, {times.get(k, 0) / max(counts.get(k, 1), 1):.2f} s per case"
                  + (f", {len(undetectable[k])} changed values read without error, seeds: {' '.join(sorted(undetectable[k]))}"
                     if k in undetectable else ""))
        print(f"fuzz_inputs: {len(cases) - len(failures)}/{len(cases)} cases passed in {time.time() - started:.0f} s")
        if failures:
            print("failing (kind seed), add them to scripts/fuzz_regressions.txt once fixed:")
            for k, s, _ in failures:
                print(f"  {k} {s}")
            sys.exit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

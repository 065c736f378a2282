#!/usr/bin/env python3
"""Runs every command line the documentation shows, as written, on a fresh copy of the repository.

What is extracted, in this order (one scratch copy, so later commands see what earlier ones made,
exactly as a reader following the documents line by line would):
  1. README.md, hostfiles/README.md, jobs/README.md, notebooks/README.md, docs/*.md: every fenced
     ```sh / ```bash block, run as one bash script (set -euo pipefail) from the copy's root;
     a plain ``` block whose first line is `$ command` is run and its output must equal the rest
     of the block (so printed tables cannot go stale);
  2. inline `moe-dist ...` / `mpirun ...` spans of those documents that are complete commands
     (they name a --config and hold no placeholder such as RUN_DIR, N, <x>, ...; a span such as
     `moe-dist compare --json` in a sentence names an option, it is not a command to run);
  3. the `Examples:` lines of every `moe-dist <command> --help`.

How the test makes that fast (the commands themselves are not edited):
  * `.build/release/moe-dist` of the copy is a wrapper around the built binary ($MOE_DIST_BIN,
    default .build/debug/moe-dist) that appends overrides to `train` and `bench`:
      train: train.max_steps=2 train.log_interval=1 train.eval_interval=1 train.checkpoint_interval=2
             train.eval_tokens=64 (a `--resume` line that sets train.max_steps or train.max_tokens gets
             only train.eval_tokens=64: it runs to the budget it is written with, from the tiny run's
             checkpoint, without --allow-config-change, as a reader's would)
      bench: --steps 1 --warmup 0
      eval:  --max-tokens 512
    and, for every configuration other than jobs/configs/tiny.yaml (the big presets and the sweep
    configs made from them), shrinks the model: model.d_model=32 model.n_heads=4 model.seq_len=16
    model.depth=2 moe.d_ff=32. Appended overrides come last, so they win over the command's own.
    A checkpoint path `.../checkpoints/step-NNNNNNNN.h5` that does not exist (the documents name the
    step of the full budget) becomes the newest checkpoint of that directory.
  * `mpirun` is a wrapper that adds --allow-run-as-root --oversubscribe (real Open MPI launches for
    up to 4 ranks); a world larger than 4 ranks, or a hostfile naming other machines (node01, ...),
    runs the same moe-dist command with --emulate-ranks N (the same expert-parallel code, N ranks as
    threads of one process: 8 busy-polling MPI processes on a 2-core CI machine take minutes).
  * `curl` serves the WikiText-2 download from $MOE_DIST_WIKITEXT2 when it is set (a directory with the
    whole splits, byte-identical to the download; the README's sha256 check verifies that), else from
    the excerpt committed in Tests/Fixtures/wikitext-2-excerpt (the first lines of each split; then the
    sha256 check, which is about the whole files, is left out and says so), and nothing else.
  * The WikiText-103 files the README asks the reader to bring are stood in for by the first 3000
    lines of each WikiText-2 split.
  * Not run here, because another test runs them: scripts/setup.sh and scripts/test.sh (CI runs them
    around this test), Slurm lines (sbatch, submit_phase.sh, local_cluster.sh, squeue, scancel,
    scontrol, SLURM_CONF: scripts/test_slurm.sh), the emulated cluster's lines (scripts/cluster.sh:
    scripts/test_cluster.sh), scripts/test_notebooks.sh, pip installs,
    `jupyter lab` (interactive) and `debug gradcheck --variants` (CLIBasicsTests runs it).

Usage: scripts/test_documented_commands.py [-k SUBSTRING] [--keep]
Prints one line per command, `N passed, N failed`, and exits non-zero on a failure.
"""
import argparse
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = ["README.md", "hostfiles/README.md", "jobs/README.md", "notebooks/README.md"]
SKIP = [  # (pattern on a logical line, reason)
    (r"^\s*scripts/setup\.sh\b", "CI runs setup before the tests"),
    (r"(^|\s)scripts/test\.sh\b", "this test is part of scripts/test.sh"),
    (r"(^|\s)scripts/test_notebooks\.sh\b", "scripts/test.sh runs it"),
    (r"\b(sbatch|submit_phase\.sh|local_cluster\.sh|squeue|scancel|scontrol|SLURM_CONF)\b", "scripts/test_slurm.sh"),
    (r"(^|\s)scripts/cluster\.sh\b", "scripts/test_cluster.sh (an emulated cluster of network namespaces)"),
    (r"\bpip install\b", "installation (CI installs the Python packages before the tests)"),
    (r"\bjupyter lab\b", "interactive"),
    (r"debug gradcheck .*--variants", "CLIBasicsTests.testGradientCheckOfEveryVariantOnTiny runs it"),
]
PLACEHOLDER = re.compile(r"\b(RUN_DIR|CONFIG|FILE|DIR|N|M|K|P|A|G|W)\b|<[^>]*>|\.\.\.|\[|\]")
TIMEOUT = 900
STAND_IN_LINES = 3000   # lines of each WikiText-2 split that stand in for WikiText-103 (a fast tokenizer training)

MOE_DIST_WRAPPER = r'''#!/usr/bin/env python3
# moe-dist as the documented-commands test runs it: tiny budgets appended (see the test's docstring).
import glob, os, sys
real = os.environ["MOE_DIST_REAL"]
args = sys.argv[1:]
def newest(path):
    d, base = os.path.split(path)
    if os.path.exists(path) or not (base.startswith("step-") and base.endswith(".h5") and d.endswith("checkpoints")):
        return path
    found = sorted(glob.glob(os.path.join(d, "step-*.h5")))
    return found[-1] if found else path
for i, a in enumerate(args):
    if i > 0 and args[i - 1] in ("--checkpoint", "--resume"):
        args[i] = newest(a)
    elif a.endswith(".h5"):
        args[i] = newest(a)
config = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "--config"), None)
shrink = [] if config is None or os.path.basename(config) == "tiny.yaml" else [
    "model.d_model=32", "model.n_heads=4", "model.seq_len=16", "model.depth=2", "moe.d_ff=32"]
written_budget = "--resume" in args and any(a.startswith(("train.max_steps=", "train.max_tokens=")) for a in args)
if args[:1] == ["train"] and written_budget:
    # A resume that extends a run's budget runs to the budget it is written with (the intervals are its own too).
    args += ["train.eval_tokens=64"] + shrink
elif args[:1] == ["train"]:
    args += ["train.max_steps=2", "train.log_interval=1", "train.eval_interval=1", "train.checkpoint_interval=2",
             "train.eval_tokens=64"] + shrink
elif args[:1] == ["bench"]:
    args += ["--steps", "1", "--warmup", "0"] + shrink
elif args[:1] == ["eval"]:
    args += ["--max-tokens", "512"]
os.execv(real, [real] + args)
'''

MPIRUN_WRAPPER = r'''#!/usr/bin/env python3
# mpirun as the documented-commands test runs it (see the test's docstring).
import os, socket, sys
args = sys.argv[1:]
i = next((i for i, a in enumerate(args) if os.path.basename(a) == "moe-dist"), None)
if i is None:
    sys.exit("test mpirun: no moe-dist in " + " ".join(args))
opts, prog = args[:i], args[i:]
np = 1
hosts = []
for j, o in enumerate(opts[:-1]):
    if o in ("-np", "-n", "--np"):
        np = int(opts[j + 1])
    if o in ("--hostfile", "-hostfile", "--machinefile"):
        with open(opts[j + 1]) as f:
            hosts = [l.split()[0] for l in f if l.strip() and not l.lstrip().startswith("#")]
local = {"localhost", "127.0.0.1", socket.gethostname()}
if (np > 4 or any(h not in local for h in hosts)) and prog[1:2] != ["bench"]:
    print(f"test mpirun: {np} ranks on {hosts or 'this machine'}: running {prog[1]} with --emulate-ranks {np}",
          file=sys.stderr, flush=True)
    os.execvp(prog[0], prog + ["--emulate-ranks", str(np)])
real = "/usr/bin/mpirun"
os.execv(real, [real, "--allow-run-as-root", "--oversubscribe"] + opts + prog)
'''

CURL_WRAPPER = r'''#!/usr/bin/env python3
# curl as the documented-commands test runs it: the WikiText-2 splits from a local copy, nothing else.
import os, re, shutil, sys
args = sys.argv[1:]
out = args[args.index("-o") + 1] if "-o" in args else None
url = next((a for a in args if a.startswith("http")), "")
m = re.search(r"/wikitext-2/(train|valid|test)\.txt$", url)
if not (m and out):
    sys.exit("test curl: no offline copy of " + url)
shutil.copyfile(os.path.join(os.environ["MOE_DIST_WIKITEXT2"], f"wiki.{m.group(1)}.tokens"), out)
'''


def logical_lines(block):
    """Lines of a shell block with backslash continuations joined."""
    out, cur = [], ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
        else:
            out.append(cur + line)
            cur = ""
    if cur:
        out.append(cur)
    return out


def extract(path):
    """(kind, text) items of one document: ('sh', block), ('output', (command, expected)), ('inline', command)."""
    text = path.read_text()
    items = []
    for m in re.finditer(r"^```([a-z]*)\n(.*?)^```", text, re.S | re.M):
        lang, body = m.group(1), m.group(2)
        if lang in ("sh", "bash"):
            items.append(("sh", body))
        elif lang == "" and body.startswith("$ "):
            first, _, rest = body.partition("\n")
            items.append(("output", (first[2:], rest)))
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for m in re.finditer(r"`([^`]+)`", prose):
        cmd = " ".join(m.group(1).split())
        if re.match(r"(moe-dist|mpirun) ", cmd) and " --config " in cmd and not PLACEHOLDER.search(cmd):
            items.append(("inline", cmd))
    return items


def subcommands(help_text):
    """The names listed under SUBCOMMANDS: (up to the blank line that ends the list)."""
    if "SUBCOMMANDS:" not in help_text:
        return []
    block = help_text.split("SUBCOMMANDS:", 1)[1].split("\n\n", 1)[0]
    return [n for n in re.findall(r"^  ([a-z][a-z0-9-]*)(?:\s|$)", block, re.M) if n != "help"]


def help_examples(binary):
    """Example command lines of every `moe-dist <command> --help`, in the order of the command list."""
    top = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
    found = []
    queue = [[c] for c in subcommands(top)]
    while queue:
        cmd = queue.pop(0)
        out = subprocess.run([binary] + cmd + ["--help"], capture_output=True, text=True).stdout
        queue = [cmd + [c] for c in subcommands(out)] + queue
        # Examples: lines starting with moe-dist or mpirun (continuations joined), in the order shown.
        joined = re.sub(r"\\\n\s*", " ", out.split("USAGE:")[0])
        for line in joined.splitlines():
            line = line.strip()
            line = re.sub(r"^Example:\s*", "", line)
            if re.match(r"(moe-dist|mpirun) ", line):
                found.append((" ".join(cmd), line))
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-k", default="", help="run only commands containing this text (earlier blocks still run)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch copy")
    opts = ap.parse_args()

    binary = Path(os.environ.get("MOE_DIST_BIN", REPO / ".build/debug/moe-dist")).resolve()
    whole = "MOE_DIST_WIKITEXT2" in os.environ
    wt2 = Path(os.environ["MOE_DIST_WIKITEXT2"] if whole else REPO / "Tests/Fixtures/wikitext-2-excerpt").resolve()
    if not whole:
        SKIP.append((r"^\s*sha256sum -c docs/wikitext-2\.sha256", "checksums of the whole splits; the committed excerpt "
                     "stands in for the download (set MOE_DIST_WIKITEXT2 for the whole splits)"))
    if not binary.exists():
        sys.exit(f"test_documented_commands: FAIL: no moe-dist binary at {binary} (swift build, or set MOE_DIST_BIN)")
    if not (wt2 / "wiki.train.tokens").exists():
        sys.exit(f"test_documented_commands: FAIL: no WikiText-2 splits in {wt2} (set MOE_DIST_WIKITEXT2)")

    work = Path(tempfile.mkdtemp(prefix="moe-documented-"))
    clone = work / "moe-dist"
    # A fresh copy: the files git tracks (as they are in the working tree), nothing else.
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for f in filter(None, files.split("\0")):
        src = REPO / f
        if src.is_file():
            (clone / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, clone / f)
    bindir = work / "bin"
    bindir.mkdir()
    for name, body in [("mpirun", MPIRUN_WRAPPER), ("curl", CURL_WRAPPER)]:
        (bindir / name).write_text(body)
        (bindir / name).chmod(0o755)
    (clone / ".build/release").mkdir(parents=True)
    (clone / ".build/release/moe-dist").write_text(MOE_DIST_WRAPPER)
    (clone / ".build/release/moe-dist").chmod(0o755)
    # The WikiText-103 files the README asks the reader to bring: the WikiText-2 splits stand in.
    (clone / "wikitext-103").mkdir()
    for s in ("train", "valid", "test"):
        with open(wt2 / f"wiki.{s}.tokens", encoding="utf-8") as src:
            head = [line for _, line in zip(range(STAND_IN_LINES), src)]
        (clone / f"wikitext-103/wiki.{s}.tokens").write_text("".join(head), encoding="utf-8")
    env = dict(os.environ, MOE_DIST_REAL=str(binary), MOE_DIST_WIKITEXT2=str(wt2),
               PATH=f"{bindir}:{clone}/.build/release:{os.environ['PATH']}",
               OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    env.pop("MOE_DIST_BIN", None)

    passed = failed = skipped = 0
    started = time.time()

    def run(label, script, expect=None):
        nonlocal passed, failed
        t0 = time.time()
        try:
            r = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=clone, env=env,
                               capture_output=True, text=True, timeout=TIMEOUT)
            ok, out, err = r.returncode == 0, r.stdout, r.stderr
            why = f"exit status {r.returncode}"
        except subprocess.TimeoutExpired as e:
            ok, out, err, why = False, str(e.stdout or ""), str(e.stderr or ""), f"timed out after {TIMEOUT} s"
        if ok and expect is not None and out.rstrip("\n") != expect.rstrip("\n"):
            ok, why = False, "output differs from the document:\n--- document\n" + expect + "--- actual\n" + out
        status = "ok  " if ok else "FAIL"
        print(f"{status} {time.time() - t0:6.1f}s  {label}", flush=True)
        if ok:
            passed += 1
        else:
            failed += 1
            print(f"     {why}\n     script:\n" + "\n".join("       " + l for l in script.splitlines())
                  + "\n     stdout (tail):\n" + "\n".join("       " + l for l in out.splitlines()[-15:])
                  + "\n     stderr (tail):\n" + "\n".join("       " + l for l in err.splitlines()[-15:]), flush=True)

    def prepare(lines):
        nonlocal skipped
        kept = []
        for line in lines:
            reason = next((r for p, r in SKIP if re.search(p, line)), None)
            if reason and line.strip() and not line.strip().startswith("#"):
                print(f"skip         {line.strip()[:100]}  ({reason})", flush=True)
                skipped += 1
                kept.append("true  # skipped: " + reason)
            else:
                kept.append(line)
        return "\n".join(kept)

    docs = [REPO / d for d in DOCUMENTS] + sorted(Path(p) for p in glob.glob(str(REPO / "docs/*.md")))
    inline = []
    for doc in docs:
        rel = doc.relative_to(REPO)
        for kind, item in extract(doc):
            if kind == "sh":
                script = prepare(logical_lines(item))
                commands = [l for l in script.splitlines() if l.strip() and not l.lstrip().startswith(("#", "true  #"))]
                if not commands:
                    continue
                label = f"{rel}: " + " ; ".join(c.strip()[:60] for c in commands)[:150]
                if opts.k and opts.k not in script:
                    label = "(setup) " + label
                run(label, script)
            elif kind == "output":
                cmd, expected = item
                run(f"{rel}: $ {cmd[:120]} (output compared)", prepare([cmd]), expected)
            else:
                inline.append((rel, item))
    for rel, cmd in inline:
        if opts.k and opts.k not in cmd:
            continue
        run(f"{rel} (inline): {cmd[:130]}", prepare([cmd]))
    for command, line in help_examples(str(binary)):
        if opts.k and opts.k not in line:
            continue
        run(f"moe-dist {command} --help: {line[:120]}", prepare(logical_lines(line)))

    print(f"test_documented_commands: {passed} passed, {failed} failed, {skipped} lines left to other tests, "
          f"{time.time() - started:.0f} s")
    if opts.keep or failed:
        print(f"test_documented_commands: scratch copy kept in {clone}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# moe-dist under the sanitizers, with zero reports allowed:
#
#  1. Address Sanitizer (+ LeakSanitizer): a debug build with every Swift module (-sanitize=address) and
#     every C target (-fsanitize=address: the vector and packed kernels, MallocCounter, Yams' libyaml)
#     instrumented, in .build-asan. It runs
#       - the unit tests (kernels, C shims, collectives, model, dispatcher, checkpoints and HDF5 I/O, data
#         pipeline, training), but for those ASAN_SKIP leaves out (and says why);
#       - scripts/test_variants.py at -np 1 and mpirun -np 2 with that build's moe-dist (train, eval and
#         resume of every architecture and routing variant);
#       - scripts/fuzz_inputs.py, when it is present, on SANITIZER_FUZZ_CASES cases per input kind.
#  2. Thread Sanitizer on the rank's threads: a debug build with -sanitize=thread / -fsanitize=thread in
#     .build-tsan, running the tests that put the threaded kernels (split products, attention heads,
#     RMSNorm, rotary embeddings, cross-entropy rows), the experts, the dispatcher's row loops and AdamW
#     on 3 threads (TSAN_TESTS), then two short trainings through the command line (one rank on the
#     machine's threads; --emulate-ranks 3).
#
# Every report goes to a log file (log_path), so reports of child processes (moe-dist under mpirun, the
# CLI runs of tests) are counted too; the script fails when any log holds a report, and prints them.
# What is exempt, and why, is in scripts/sanitizers/lsan.supp (Open MPI's own allocations at exit) and
# scripts/sanitizers/keep_loaded.c (keeps Open MPI's components mapped so that those can be named).
# A canary (scripts/sanitizers/canary.swift: a heap overflow, a data race) checks first that each
# sanitizer reports into the logs as set up here, so "zero reports" cannot come from a silent sanitizer.
#
#   scripts/test_sanitizers.sh                    # both (CI)
#   SANITIZERS=asan scripts/test_sanitizers.sh    # only one: asan or tsan
#   KEEP=1 scripts/test_sanitizers.sh             # keep the report logs
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
started=$SECONDS
sanitizers="${SANITIZERS:-asan tsan}"
fail() { echo "test_sanitizers: FAIL: $*" >&2; exit 1; }
say() { echo "test_sanitizers: $*"; }

logs="$(mktemp -d "${TMPDIR:-/tmp}/moe-sanitizers.XXXXXX")"
if [ -z "${KEEP:-}" ]; then trap 'rm -rf "$logs"' EXIT; else say "keeping $logs"; fi

# The unit tests left out under ASan (a swift test --skip regex), for the CI budget; ASAN_SKIP=CLITests runs
# all the others (~20 min on a busy 2-core machine, against ~13 with these left out):
#   CLITests: drive the binary end to end (~25 min more under ASan); test_variants.py runs the same
#     commands (data prepare, train, eval, resume, mpirun) on the ASan binary.
#   TrainingTests.TrainingTests, DataSeedTests: train for many steps (a falling loss, seed semantics)
#     through the code paths the matrix trains through.
#   RoundTripTests: tokenizer round trips of long texts; PreTokenizerTests, TokenizerParityTests and the
#     matrix's data prepare run the same encoder, trainer and pre-tokenizer.
ASAN_SKIP="${ASAN_SKIP:-CLITests|TrainingTests\.TrainingTests/|DataSeedTests|RoundTripTests}"
# The tests that run the rank's threads (3 threads where the test chooses the count).
TSAN_TESTS='WorkerPoolTests|ThreadInvarianceTests|DispatcherThreadsTests|AdamWThreadsTests|MatmulTests.testParallelGemmMatchesTheReference|AttentionWorkersTests.testTwoWorkersMatchOne|CrossEntropyTests.testThreadsGiveTheSameRows|RMSNormTests.testThreadsGiveTheSameBits|RopeTests.testThreadsGiveTheSameBits|PackedMatmulTests'

build() {  # build SCRATCH FLAGS...: a sanitized debug build with tests
  local scratch="$1"; shift
  local t=$SECONDS
  # The package dependencies come from the main build's checkouts when there are any (no second fetch).
  if [ ! -d "$scratch/checkouts" ] && [ -d .build/checkouts ] && [ -f .build/workspace-state.json ]; then
    mkdir -p "$scratch"
    cp -R .build/checkouts .build/repositories .build/workspace-state.json "$scratch"/
  fi
  swift build --build-tests --scratch-path "$scratch" "$@" 2>&1 | grep -Ev '^\[[0-9]+/[0-9]+\]|Cannot export local symbol' || true
  [ -x "$scratch/debug/moe-dist" ] || fail "the build in $scratch did not produce moe-dist"
  say "built $scratch in $((SECONDS - t)) s"
}

reports() {  # reports DIR PATTERN: the log files in DIR holding a report
  grep -l -E "$2" "$1"/* 2>/dev/null || true
}

check_reports() {  # check_reports DIR PATTERN WHAT
  local found
  found="$(reports "$1" "$2")"
  if [ -n "$found" ]; then
    for f in $found; do echo "---- $f"; sed -n '1,80p' "$f"; done >&2
    fail "$3: $(echo "$found" | wc -l) process(es) with sanitizer reports (above)"
  fi
  say "$3: 0 reports"
}

canary() {  # canary FLAG DEFECT DIR ENVIRONMENT...: the canary's defect must leave a report in DIR
  local flag="$1" defect="$2" dir="$3"; shift 3
  mkdir -p "$logs/canary"
  swiftc "$flag" -g scripts/sanitizers/canary.swift -o "$logs/canary/$defect" >"$logs/canary/build.log" 2>&1 \
    || { cat "$logs/canary/build.log" >&2; fail "could not build the $flag canary"; }
  env "$@" "$logs/canary/$defect" "$defect" >/dev/null 2>&1 || true
  [ -n "$(reports "$dir" 'ERROR: (AddressSanitizer|LeakSanitizer)|WARNING: ThreadSanitizer')" ] \
    || fail "the $flag canary (a known defect) left no report in $dir: the sanitizer set-up is not working"
  rm -f "$dir"/*
}

for s in $sanitizers; do
  case "$s" in
  asan)
    build .build-asan -Xswiftc -sanitize=address -Xcc -fsanitize=address
    cc -shared -fPIC -O2 -o .build-asan/keep_loaded.so scripts/sanitizers/keep_loaded.c
    mkdir -p "$logs/asan"
    asan_env=(ASAN_OPTIONS="log_path=$logs/asan/report:check_initialization_order=1:detect_stack_use_after_return=1:detect_leaks=1"
              LSAN_OPTIONS="suppressions=$repo/scripts/sanitizers/lsan.supp:print_suppressions=0"
              LD_PRELOAD="$repo/.build-asan/keep_loaded.so")
    canary -sanitize=address overflow "$logs/asan" "${asan_env[@]}"
    t=$SECONDS
    # No leak check in the test runner itself: swift-corelibs-xctest leaves its own test graph (XCTestCase,
    # XCTestCaseRun and XCTestSuite objects in a retain cycle) allocated at exit, and every allocation of a
    # test has XCTest's runner on its stack, so no suppression can tell the two apart. Address errors are
    # still reported here; leaks are checked in every moe-dist process of the variant matrix (below).
    env "${asan_env[@]/%:detect_leaks=1/:detect_leaks=0}" MOE_DIST_BIN="$repo/.build-asan/debug/moe-dist" MOE_DIST_REQUIRE_TOOLS=1 \
      swift test --skip-build --scratch-path .build-asan --skip "$ASAN_SKIP" 2>&1 \
      | tee "$logs/asan-unit.log" | grep -E "error:|failed|Executed .* tests" | tail -20 || true
    grep -Eq "Executed [0-9]+ tests?, with 0 failures" "$logs/asan-unit.log" || fail "unit tests under ASan failed"
    say "ASan unit tests (all but $ASAN_SKIP): $((SECONDS - t)) s"
    check_reports "$logs/asan" 'ERROR: (AddressSanitizer|LeakSanitizer)' "ASan unit tests"
    t=$SECONDS
    env "${asan_env[@]}" MOE_DIST_BIN="$repo/.build-asan/debug/moe-dist" \
      python3 scripts/test_variants.py --launches np1,np2 || fail "variant matrix under ASan"
    say "ASan variant matrix (-np 1, -np 2): $((SECONDS - t)) s"
    check_reports "$logs/asan" 'ERROR: (AddressSanitizer|LeakSanitizer)' "ASan variant matrix"
    if [ -f scripts/fuzz_inputs.py ]; then
      t=$SECONDS
      env "${asan_env[@]}" MOE_DIST_BIN="$repo/.build-asan/debug/moe-dist" \
        python3 scripts/fuzz_inputs.py --cases "${SANITIZER_FUZZ_CASES:-20}" || fail "fuzzed inputs under ASan"
      say "ASan fuzzed inputs: $((SECONDS - t)) s"
      check_reports "$logs/asan" 'ERROR: (AddressSanitizer|LeakSanitizer)' "ASan fuzzed inputs"
    fi
    ;;
  tsan)
    build .build-tsan -Xswiftc -sanitize=thread -Xcc -fsanitize=thread
    mkdir -p "$logs/tsan"
    tsan_env=(TSAN_OPTIONS="log_path=$logs/tsan/report:halt_on_error=0")
    canary -sanitize=thread race "$logs/tsan" "${tsan_env[@]}"
    t=$SECONDS
    env "${tsan_env[@]}" swift test --skip-build --scratch-path .build-tsan --filter "$TSAN_TESTS" 2>&1 \
      | tee "$logs/tsan-unit.log" | grep -E "error:|failed|Executed .* tests" | tail -20 || true
    grep -Eq "Executed [0-9]+ tests?, with 0 failures" "$logs/tsan-unit.log" || fail "threaded tests under TSan failed"
    say "TSan threaded tests: $((SECONDS - t)) s"
    check_reports "$logs/tsan" 'WARNING: ThreadSanitizer' "TSan threaded tests"
    # The real command line: one rank on the machine's threads (a model wide enough that the row loops
    # split: N·d = 8·64·128 values), and 3 ranks as threads of one process (the collectives' rendezvous).
    t=$SECONDS
    tiny=(train --config jobs/configs/tiny.yaml train.max_steps=2 train.eval_tokens=256)
    env "${tsan_env[@]}" .build-tsan/debug/moe-dist "${tiny[@]}" --run-dir "$logs/tsan-run-1" \
      model.d_model=128 model.seq_len=64 moe.d_ff=128 >/dev/null || fail "train under TSan (one rank)"
    env "${tsan_env[@]}" .build-tsan/debug/moe-dist "${tiny[@]}" --run-dir "$logs/tsan-run-3" --emulate-ranks 3 \
      train.global_batch=6 train.micro_batch=2 >/dev/null || fail "train under TSan (--emulate-ranks 3)"
    say "TSan train runs: $((SECONDS - t)) s"
    check_reports "$logs/tsan" 'WARNING: ThreadSanitizer' "TSan train runs"
    ;;
  *) fail "SANITIZERS: unknown sanitizer '$s' (asan, tsan)" ;;
  esac
done
say "passed in $((SECONDS - started)) s"

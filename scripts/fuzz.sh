#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/: the Rust readers through libfuzzer-sys, and the packaged
# executable's C .npy reader and argument parser through clang) and runs each on its
# committed corpus (fuzz/corpus/TARGET). See docs/fuzzing.md.
#
#   scripts/fuzz.sh                   build, then a burst of $OAR_FUZZ_SECONDS (default 15) s per target (CI)
#   scripts/fuzz.sh --long [RUNS]     the long campaign: RUNS executions per target (default 1000000),
#                                     each capped at $OAR_FUZZ_MAX_SECONDS when set
#   scripts/fuzz.sh --build           build only
#   scripts/fuzz.sh --no-build ...    use the binaries already built
#   scripts/fuzz.sh ... TARGET...     only these targets
#
# Route: plain `cargo build` on the stable toolchain with LLVM's sanitizer-coverage pass
# (-Cpasses=sancov-module: the flags cargo-fuzz passes), so neither cargo-fuzz nor
# RUSTC_BOOTSTRAP is needed. New inputs go to a scratch corpus, never the committed one;
# a crash is saved as $OAR_FUZZ_OUT/crash-TARGET/* and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=burst
RUNS=1000000
BUILD=1
TARGETS=()
while [ $# -gt 0 ]; do
    case "$1" in
    --long)
        MODE=long
        if [[ "${2:-}" =~ ^[0-9]+$ ]]; then RUNS=$2; shift; fi
        ;;
    --build) MODE=build ;;
    --no-build) BUILD=0 ;;
    -*) echo "scripts/fuzz.sh: unknown flag $1" >&2; exit 2 ;;
    *) TARGETS+=("$1") ;;
    esac
    shift
done
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${OAR_FUZZ_TARGET_DIR:-$ROOT/target/fuzz-build}
OUT=${OAR_FUZZ_OUT:-$ROOT/target/fuzz-out}
BIN=$CARGO_TARGET_DIR/$TRIPLE/release
ALL=(npy safetensors cluster_json cluster_toml ir_json ir_text onnx onnx_external checkpoint c_npy)
if [ ${#TARGETS[@]} -eq 0 ]; then TARGETS=("${ALL[@]}"); fi

if [ "$BUILD" = 1 ]; then
    # --target keeps the flags off build scripts and proc macros (they link no libFuzzer).
    RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks --cfg fuzzing" \
        cargo build --manifest-path fuzz/Cargo.toml --release --locked --target "$TRIPLE" --bins
    # The C harness: ASan + UBSan, every UB report fatal.
    mkdir -p "$BIN"
    "${OAR_FUZZ_CC:-clang-22}" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -I codegen/src/package fuzz/c/npy_fuzz.c -o "$BIN/c_npy" -lpthread -lm
fi
[ "$MODE" = build ] && exit 0

# The checkpoint and external-data targets write files each execution: keep them in memory.
if [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
mkdir -p "$OUT"
for t in "${TARGETS[@]}"; do
    work=$OUT/corpus-$t
    mkdir -p "$work" "$OUT/crash-$t"
    # -rss_limit_mb / -malloc_limit_mb: an allocation sized by a corrupt field fails the run;
    # -timeout: so does a hang.
    args=(-rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 -max_len=262144
        -artifact_prefix="$OUT/crash-$t/" -print_final_stats=1)
    # The C reader prints an error per rejected input: keep stderr for sanitizer reports only.
    if [ "$t" = c_npy ]; then args+=(-close_fd_mask=2); fi
    if [ "$MODE" = long ]; then
        args+=(-runs="$RUNS")
        if [ -n "${OAR_FUZZ_MAX_SECONDS:-}" ]; then args+=(-max_total_time="$OAR_FUZZ_MAX_SECONDS"); fi
    else
        args+=(-max_total_time="${OAR_FUZZ_SECONDS:-15}")
    fi
    seeds=(fuzz/corpus/$t)
    if [ -d "fuzz/regressions/$t" ]; then seeds+=("fuzz/regressions/$t"); fi
    echo "== fuzz $t ($MODE)"
    log=$OUT/$t.log
    rc=0
    "$BIN/$t" "${args[@]}" "$work" "${seeds[@]}" >"$log" 2>&1 || rc=$?
    grep -E "^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec)" "$log" || true
    if [ "$rc" -ne 0 ]; then
        tail -40 "$log" >&2
        echo "fuzz target $t failed (exit $rc); the input is in $OUT/crash-$t" >&2
        exit 1
    fi
done

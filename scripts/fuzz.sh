#!/usr/bin/env bash
# Runs every cargo-fuzz target of crates/etagd-client/fuzz for a bounded time (FUZZ_SECONDS each, 60 by default),
# on the machine's stable toolchain, and fails on the first crash, leak or timeout libFuzzer reports.
#
# - cargo-fuzz is installed from crates.io at a pinned version when missing (`cargo install --locked`).
# - Stable, without a sanitizer: `-s none` leaves out the -Zsanitizer flag, and RUSTC_BOOTSTRAP=1 lets stable rustc
#   take the few unstable options cargo-fuzz still passes (the machine has no nightly toolchain and cannot fetch
#   one). Coverage guidance (sancov) and debug assertions stay on, so panics and assertion failures are found;
#   memory errors only where Rust would panic (the crate forbids unsafe code).
# - The corpus committed under crates/etagd-client/fuzz/corpus/<target>/ seeds each run; what a run discovers is
#   written to a scratch directory, so running this leaves the work tree unchanged. To keep new inputs, merge them:
#   `cargo fuzz cmin <target>` after copying them in.
# Set CARGO_TARGET_DIR as for any cargo command; the fuzz build goes to its fuzz/ subfolder (other RUSTFLAGS).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ="$ROOT/crates/etagd-client/fuzz"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
CARGO_FUZZ_VERSION=0.13.2
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/fuzz"
export RUSTC_BOOTSTRAP=1
SCRATCH="$CARGO_TARGET_DIR/scratch-corpus"
START=$SECONDS

if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io"
    nice -n 10 cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
cd "$FUZZ"
mapfile -t TARGETS < <(cargo fuzz list)
echo "fuzz targets: ${TARGETS[*]} (${SECONDS_PER_TARGET}s each, $(rustc --version), no sanitizer)"

# One build of every target; -O: the release profile with debug assertions, as the targets rely on them.
build_start=$SECONDS
nice -n 10 cargo fuzz build --sanitizer none -O
echo "built in $((SECONDS - build_start))s"

for target in "${TARGETS[@]}"; do
    seeds="corpus/$target"
    if [[ -z "$(ls -A "$seeds" 2>/dev/null)" ]]; then
        echo "fuzz: $target has no committed corpus in $FUZZ/$seeds; add seed inputs there" >&2
        exit 1
    fi
    rm -rf "${SCRATCH:?}/$target"
    mkdir -p "$SCRATCH/$target"
    target_start=$SECONDS
    echo "== $target"
    # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: the default 2 GiB is kept explicit.
    if ! cargo fuzz run --sanitizer none -O "$target" "$SCRATCH/$target" "$seeds" -- \
        -dict=dictionary/http.dict -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$SCRATCH/$target.log" 2>&1; then
        tail -60 "$SCRATCH/$target.log" >&2
        echo "fuzz: $target FAILED after $((SECONDS - target_start))s; the input is in $FUZZ/artifacts/$target/" >&2
        exit 1
    fi
    runs="$(awk '/stat::number_of_executed_units/ {print $2}' "$SCRATCH/$target.log")"
    cover="$(grep -o 'cov: [0-9]*' "$SCRATCH/$target.log" | tail -1)"
    echo "$target: ${runs:-?} inputs, $cover, no crash, in $((SECONDS - target_start))s"
done
echo "fuzz: ${#TARGETS[@]} targets passed in $((SECONDS - START))s"

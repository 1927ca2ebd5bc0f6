#!/usr/bin/env bash
# Builds and runs the fuzz targets (docs/testing.md, "Fuzzing"): `make fuzz-smoke` (CI, ~20 s
# per target) and `make fuzz` (FUZZ_SECONDS per target, 300 by default).
#
#   fuzz/run.sh [SECONDS [TARGET...]]
#
# cargo fuzz on the stable toolchain: without a sanitizer (`-s none`) it needs no nightly flag.
# Roster forbids unsafe code, so AddressSanitizer (which needs -Zsanitizer, nightly only) would
# add nothing; overflow checks and debug assertions stay on. Each target starts from its seeds
# (fuzz/seeds/<target>, committed) and what earlier runs here found (fuzz/corpus/<target>, not
# committed); a failing input is kept in fuzz/artifacts/<target>/. Exit 1 if any target fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CARGO_FUZZ_VERSION=0.13.2
seconds=${1:-${FUZZ_SECONDS:-300}}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(csv_import sacctmgr gold_reply gold_xml username_scheme manifest)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# Its own target directory whatever CARGO_TARGET_DIR says: the fuzz build (release,
# instrumented) shares nothing with the main one.
opts=(--fuzz-dir fuzz --sanitizer none --target-dir fuzz/target)
start=$SECONDS
cargo fuzz build "${opts[@]}"
echo "fuzz: built in $((SECONDS - start)) s"

failed=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    echo "fuzz: $t for ${seconds} s"
    # -timeout: one input taking 10 s is a blow-up, not slowness; -rss_limit_mb: a bomb.
    if ! cargo fuzz run "${opts[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
        -print_final_stats=1 >"fuzz/artifacts/$t/log" 2>&1; then
        failed+=("$t")
        tail -n 40 "fuzz/artifacts/$t/log"
        echo "fuzz: $t FAILED; the input is in fuzz/artifacts/$t/ (replay: cargo fuzz run --fuzz-dir fuzz -s none $t fuzz/artifacts/$t/<file>)"
    else
        grep -E '^(Done|stat::number_of_executed_units)' "fuzz/artifacts/$t/log" | head -n 1 || true
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: failed: ${failed[*]}"
    exit 1
fi
echo "fuzz: ${#targets[@]} target(s), ${seconds} s each, no failure"

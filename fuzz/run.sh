#!/usr/bin/env bash
# Builds every cargo-fuzz target of fuzz/, fuzzes each for FUZZ_SECONDS
# (default 30), then replays every saved reproducer under
# fuzz/regressions/<target>/. Exits non-zero if any run or replay fails
# (a crash, a failed property, a leak, a timeout) or the build fails.
#
#   bash fuzz/run.sh                     # 30 s per target
#   FUZZ_SECONDS=600 bash fuzz/run.sh    # longer
#   FUZZ_TARGETS="ids frame_codec" bash fuzz/run.sh
#
# Needs: rustup with a nightly toolchain (FUZZ_TOOLCHAIN, default nightly)
# and a C++ compiler (libfuzzer-sys builds libFuzzer). cargo-fuzz is
# installed with `cargo install` (into CARGO_HOME) if it is not on PATH.
set -euo pipefail

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$fuzz_dir")"
cd "$root"

seconds="${FUZZ_SECONDS:-30}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
sanitizer="${FUZZ_SANITIZER:-address}"
cargo_fuzz_version="${CARGO_FUZZ_VERSION:-0.13.2}"
# The pinned cargo-fuzz on PATH, else installed with `cargo install` into
# CARGO_HOME (so a machine builds it once, not in every fresh clone).
if [ "$(cargo-fuzz --version 2>/dev/null)" != "cargo-fuzz $cargo_fuzz_version" ]; then
    echo "== installing cargo-fuzz $cargo_fuzz_version into ${CARGO_HOME:-$HOME/.cargo}"
    cargo install --quiet --locked --force --version "$cargo_fuzz_version" cargo-fuzz
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

if ! cargo "+$toolchain" --version >/dev/null 2>&1; then
    echo "error: the Rust toolchain '$toolchain' is missing (cargo-fuzz needs nightly: rustup toolchain install nightly)" >&2
    exit 2
fi
fuzz=(cargo "+$toolchain" fuzz)
build_flags=(--sanitizer "$sanitizer")

targets="${FUZZ_TARGETS:-$("${fuzz[@]}" list)}"

# http_bodies needs the `http` feature (the whole server); the others not.
target_flags() {
    case "$1" in
        http_bodies) echo "--features http" ;;
        *) ;;
    esac
}

echo "== building fuzz targets: $(echo $targets)"
start=$(date +%s)
for t in $targets; do
    # shellcheck disable=SC2046
    "${fuzz[@]}" build "${build_flags[@]}" $(target_flags "$t") "$t"
done
echo "== built in $(( $(date +%s) - start )) s"

# Options per target. http_bodies keeps a server with state across inputs
# on purpose, which libFuzzer's leak check (run after every input that
# allocates more than it frees) would scan the whole heap for: ~20 ms an
# input. Leaks are still checked on the stateless targets.
libfuzzer_opts() {
    case "$1" in
        http_bodies) echo "-detect_leaks=0" ;;
        *) ;;
    esac
}

failed=()
summary=()
for t in $targets; do
    gen="fuzz/target/corpus/$t"   # first dir: libFuzzer writes new inputs here
    seeds="fuzz/corpus/$t"        # committed seed-* files
    mkdir -p "$gen" "$seeds"
    log="fuzz/target/$t.log"
    echo "== fuzzing $t for $seconds s (log: $log)"
    # shellcheck disable=SC2046
    if "${fuzz[@]}" run "${build_flags[@]}" $(target_flags "$t") "$t" "$gen" "$seeds" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 $(libfuzzer_opts "$t") \
        >"$log" 2>&1; then
        line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)"
        summary+=("$t: ${line:-done}")
    else
        failed+=("$t (fuzzing; see $log and fuzz/artifacts/$t/)")
        grep -E 'panicked at|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -n 20 || true
        summary+=("$t: FAILED")
    fi
done

shopt -s nullglob
for dir in fuzz/regressions/*/; do
    t="$(basename "$dir")"
    case " $(echo $targets) " in
        *" $t "*) ;;
        *) echo "== not replaying $dir: $t is not among the targets"; continue ;;
    esac
    for input in "$dir"*; do
        [ -f "$input" ] || continue
        echo "== replaying $input"
        log="fuzz/target/replay-$t-$(basename "$input").log"
        # shellcheck disable=SC2046
        if "${fuzz[@]}" run "${build_flags[@]}" $(target_flags "$t") "$t" "$input" -- $(libfuzzer_opts "$t") >"$log" 2>&1; then
            summary+=("replay $input: ok")
        else
            grep -E 'panicked at' -A 3 "$log" | head -n 8 || true
            failed+=("replay of $input (see $log)")
            summary+=("replay $input: FAILED")
        fi
    done
done

echo "== summary"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "== findings:" >&2
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "== no findings"

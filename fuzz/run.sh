#!/usr/bin/env bash
# Runs a fuzz target for a fixed time on stable Rust and prints what it did.
#
#   fuzz/run.sh TARGET SECONDS     one of: review review_structured mutate mutate_structured
#   fuzz/run.sh all SECONDS        each of them in turn, SECONDS each
#
# Stable Rust: `--sanitizer none` (AddressSanitizer needs the nightly-only -Zsanitizer;
# the crate is #![forbid(unsafe_code)], so ASan would find little). The coverage
# instrumentation cargo-fuzz asks for (-Cpasses=sancov-module, -Cllvm-args=...) is
# stable. No RUSTC_BOOTSTRAP needed.
#
# The grown corpus goes to fuzz/target/corpus-TARGET/ (libFuzzer writes new inputs to
# the first corpus directory); the committed seeds in fuzz/corpus/TARGET/ are read
# second and never written. Crashes go to fuzz/artifacts/TARGET/. The full log is
# fuzz/target/logs/TARGET-<time>.log.
#
# cargo-fuzz passes -artifact_prefix=fuzz/artifacts/TARGET/.
# Environment: FUZZ_ARGS adds libFuzzer flags; CARGO_BUILD_JOBS (default 1) bounds the
# build.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
all=(review review_structured mutate mutate_structured)

usage() {
    echo "usage: fuzz/run.sh TARGET|all SECONDS   (targets: ${all[*]})" >&2
    exit 2
}
[ $# -eq 2 ] || usage
[[ "$2" =~ ^[0-9]+$ ]] || usage
if [ "$1" = all ]; then
    targets=("${all[@]}")
else
    [[ " ${all[*]} " == *" $1 "* ]] || usage
    targets=("$1")
fi
seconds=$2
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}"
flags=(--sanitizer none)

# The seeds of a structure-aware target are those of its raw twin (arbitrary reads any
# bytes); see README.md.
seeds_of() {
    case "$1" in
        review_structured) echo corpus/review ;;
        mutate_structured) echo corpus/mutate ;;
        *) echo "corpus/$1" ;;
    esac
}

summary=()
status=0
for target in "${targets[@]}"; do
    cargo fuzz build "${flags[@]}" "$target"
    corpus="target/corpus-$target"
    artifacts="artifacts/$target"
    mkdir -p "$corpus" "$artifacts" target/logs
    log="target/logs/$target-$(date -u +%Y%m%dT%H%M%SZ).log"
    marker="target/logs/.start-$target"
    touch "$marker"
    before=$(find "$artifacts" -type f | wc -l)
    echo "== $target: ${seconds}s, corpus $corpus + $(seeds_of "$target"), log $log" >&2
    set +e
    # -max_len: the largest seed (the meshed pod review) is 9 KB; leave room to grow.
    # -timeout: one input taking 10 s is a finding (the server answers in microseconds).
    # -rss_limit_mb: 2 GB is a finding too (the body limit is 7 MiB).
    # shellcheck disable=SC2086
    cargo fuzz run "${flags[@]}" "$target" "$corpus" "$(seeds_of "$target")" -- \
        -max_total_time="$seconds" -print_final_stats=1 -max_len=32768 \
        -timeout=10 -rss_limit_mb=2048 ${FUZZ_ARGS:-} \
        >"$log" 2>&1
    rc=$?
    set -e
    after=$(find "$artifacts" -type f | wc -l)
    findings=$((after - before))
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n1 || true)
    last_line=$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -n1 || true)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
    line=${done_line:-$last_line}
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$line")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$line")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$line")
    files=$(find "$corpus" -type f | wc -l)
    echo "${line:-(no stats line; see $log)}"
    if [ "$rc" -ne 0 ] || [ "$findings" -gt 0 ]; then
        status=1
        grep -E "panicked at|^(thread|Failing input|SUMMARY|==[0-9]+== ERROR)" -A2 "$log" | head -n 20 || true
        for crash in $(find "$artifacts" -type f -newer "$marker" ! -name '*.rendered'); do
            echo "finding: fuzz/$crash"
            case "$target" in
                *_structured)
                    # The rendered input, ready for fuzz/regressions/<raw target>/.
                    bin="target/x86_64-unknown-linux-gnu/release/$target"
                    TRACEPATCH_FUZZ_DUMP="$crash.rendered" "$bin" "$crash" >/dev/null 2>&1 || true
                    [ -f "$crash.rendered" ] && echo "  rendered: fuzz/$crash.rendered"
                    ;;
            esac
        done
    fi
    summary+=("$(printf '%-18s %6ss  execs %-10s exec/s %-6s cov %-5s ft %-6s corpus %s (%s files)  findings %s' \
        "$target" "$seconds" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$files" "$findings")")
done
printf '%s\n' "${summary[@]}"
exit "$status"

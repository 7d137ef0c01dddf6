#!/bin/sh
# Builds HVKit's libFuzzer targets (Fuzz/, every module compiled with
# -sanitize=fuzzer,address) and runs each: first its regression inputs (Fuzz/Regressions,
# each a crash a fuzzer once found, which must now pass), then fuzzing for SECONDS seconds
# from its committed seed corpus (Fuzz/Corpus) plus a working corpus in Fuzz/.build/corpus.
# A crash, a leak, a timeout (10 s per input) or an out-of-memory (4 GiB) fails the run and
# leaves the input in Fuzz/.build/artifacts: turn it into a regression test.
#
#   sh Scripts/fuzz.sh [SECONDS] [TARGET...]     (default 60 seconds, every target)
set -eu
cd "$(dirname "$0")/.."
seconds=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-"fuzz-split-queue fuzz-mmio-transport fuzz-block-request fuzz-console-rng fuzz-hypercall fuzz-elf fuzz-bzimage fuzz-boot-tables"}

swift build -c release --package-path Fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
binaries=Fuzz/.build/release
mkdir -p Fuzz/.build/artifacts
# Swift's own crash reporter would symbolicate for minutes; libFuzzer prints the stack.
export SWIFT_BACKTRACE=enable=no
failed=""
for target in $targets; do
    options="-timeout=10 -rss_limit_mb=4096 -artifact_prefix=Fuzz/.build/artifacts/$target-"
    if [ -d "Fuzz/Regressions/$target" ]; then
        echo "== $target: regression inputs"
        # shellcheck disable=SC2086
        if ! "$binaries/$target" $options Fuzz/Regressions/"$target"/* >"Fuzz/.build/$target-regressions.log" 2>&1; then
            tail -40 "Fuzz/.build/$target-regressions.log"
            failed="$failed $target(regression)"
            continue
        fi
    fi
    echo "== $target: ${seconds}s"
    mkdir -p "Fuzz/.build/corpus/$target" "Fuzz/Corpus/$target"
    # shellcheck disable=SC2086
    if ! "$binaries/$target" $options -max_total_time="$seconds" -print_final_stats=1 \
            "Fuzz/.build/corpus/$target" "Fuzz/Corpus/$target" >"Fuzz/.build/$target.log" 2>&1; then
        tail -60 "Fuzz/.build/$target.log"
        failed="$failed $target"
        continue
    fi
    grep -E "^(#[0-9]+ *DONE|stat::number_of_executed_units)" "Fuzz/.build/$target.log" || true
done
if [ -n "$failed" ]; then
    echo "fuzzing found problems in:$failed (inputs in Fuzz/.build/artifacts)"
    exit 1
fi
echo "every fuzz target ran clean"

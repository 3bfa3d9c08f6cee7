#!/bin/sh
# run.sh NAME SECONDS: run one libFuzzer harness (build/fuzz/fuzz_NAME) for
# SECONDS, from the committed seeds plus the working corpus it grew before
# (build/fuzz/corpus/NAME), and print one line:
#   NAME  seconds  executions  coverage (edges)  features  corpus  crashes
# A crash, leak, timeout or out-of-memory input is written to
# tests/fuzz/regressions/NAME/ (commit it with the fix: make test replays it).
# Exit status 1 when the fuzzer found something.
set -u
name=$1
secs=$2
bin=build/fuzz/fuzz_$name
work=build/fuzz/corpus/$name
regr=tests/fuzz/regressions/$name
log=build/fuzz/$name.log
mkdir -p "$work" "$regr"
case $name in
    safetensors|st_index|hf_config|tokenizer_json) dict=-dict=tests/fuzz/json.dict ;;
    *) dict=""; [ -f "tests/fuzz/$name.dict" ] && dict="-dict=tests/fuzz/$name.dict" ;;
esac
# -malloc_limit_mb: no single allocation above 1 GB (the harnesses load under
# a 256 MB limit, so a bigger one means something escaped it); -timeout: an
# input that takes 10 s is a finding too.
"$bin" -max_total_time="$secs" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
    -artifact_prefix="$regr/" $dict "$work" "build/fuzz-seeds/corpus/$name" >"$log" 2>&1
rc=$?
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1)
cov=$(echo "$last" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
ft=$(echo "$last" | sed -n 's/.*ft: \([0-9]*\).*/\1/p')
corp=$(echo "$last" | sed -n 's/.*corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p')
found=$(grep -cE '^(==[0-9]+==ERROR|SUMMARY: |.*(deadly signal|Test unit written))' "$log")
printf "%-16s %5ss %11s execs  cov %6s  ft %6s  corpus %-12s %s\n" "$name" "$secs" "${execs:-?}" "${cov:-?}" \
    "${ft:-?}" "${corp:-?}" "$([ $rc -eq 0 ] && echo 'no crash' || echo "FOUND (rc $rc, see $log)")"
exit $([ $rc -eq 0 ] && echo 0 || echo 1)

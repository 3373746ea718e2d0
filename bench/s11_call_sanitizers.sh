#!/usr/bin/env bash
# Session 11: racecheck/synccheck (and memcheck) on the changed seesaw builds: the self-check, the
# 128-row page-32 tests (64-token seesaw, two boxes a slice) and the 16-bit partials tests.
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
T="tests/test_gpu_decode.py tests/test_gpu_partials.py -q -x -k"
K="heads1-2-32 or partials"
for tool in racecheck synccheck; do
  timeout 100 compute-sanitizer --tool $tool --report-api-errors no python3 -m cupymla check > "$OUT/$tool-check.log" 2>&1
  echo "$tool check rc=$?: $(grep -E 'SUMMARY' "$OUT/$tool-check.log" | tail -1) / $(grep -c ' ok$' "$OUT/$tool-check.log") cases ok"
done
for tool in memcheck racecheck synccheck; do
  timeout 100 compute-sanitizer --tool $tool --report-api-errors no python3 -m pytest $T "$K" > "$OUT/$tool-tests.log" 2>&1
  echo "$tool tests rc=$?: $(grep -E 'SUMMARY' "$OUT/$tool-tests.log" | tail -1) / $(grep -E 'passed|failed' "$OUT/$tool-tests.log" | tail -1)"
done
grep -h "Race reported\|RACECHECK\|Warning\|Error:" "$OUT"/racecheck-*.log | sort | uniq -c | head -20

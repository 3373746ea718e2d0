#!/usr/bin/env bash
# Session 12, call 6: bench/tma_order.py with the plain-load and in-order comparisons, the
# sanitizers on the self-check (combine.cu changed: wide CTAs of 256 columns share a 16 KB
# partial-sum array), then the full benchmark for the README.
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
nvidia-smi --query-gpu=name,clocks.max.sm,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
step tma_order 90 python3 bench/tma_order.py
for tool in memcheck racecheck synccheck; do
  step "$tool" 150 compute-sanitizer --tool "$tool" --report-api-errors no python3 -m cupymla check
done
grep -h "Race reported\|RACECHECK SUMMARY\|ERROR SUMMARY" "$OUT"/racecheck.log | sed 's/0x[0-9a-f]*//g' | sort | uniq -c | head
step bench 150 python3 -m cupymla bench --no-torch --out "$OUT/p64" --page-size 64
cat $OUT/tma_order.log
grep -E "^b[0-9]|host" $OUT/bench.log | cut -c1-150 | head -30

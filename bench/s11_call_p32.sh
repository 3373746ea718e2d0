#!/usr/bin/env bash
# Session 11: the 64-token seesaw on pages of 32 (two 32-row boxes a slice): tests, A/B, memcheck, suite.
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
step pages 120 python3 -m pytest tests/test_gpu_decode.py tests/test_gpu_partials.py -q -x -k "page_sizes or partials"
grep -E "^(FAILED|E )" "$OUT/pages.log" | head -5
timeout 150 bash bench/ab_env.sh "--configs 0,1,3,9,12 --page-size 32" 2 CUPYMLA_SEESAW64_P32=0 - 2>&1 | tee "$OUT/ab.log" | grep -v "^== check" | grep -v "^b" ; grep "^== check" "$OUT/ab.log"
step memcheck 120 compute-sanitizer --tool memcheck --report-api-errors no python3 -m pytest tests/test_gpu_decode.py -q -x -k "page_sizes and heads1-2-32"
grep -E "ERROR SUMMARY" "$OUT/memcheck.log"
step suite 200 python3 -m pytest tests -m gpu -q -x
grep -E "^(FAILED|E )" "$OUT/suite.log" | head -5

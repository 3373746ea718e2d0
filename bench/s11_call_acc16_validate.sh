#!/usr/bin/env bash
# Session 11: 16-bit partials on by default for the seesaw plans: validate, A/B, full run.
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
step suite 200 python3 -m pytest tests -m gpu -q -x
grep -E "^(FAILED|E )" "$OUT/suite.log" | head -5
step check 60 python3 -m cupymla check
step memcheck 150 compute-sanitizer --tool memcheck --report-api-errors no python3 -m cupymla check
grep -E "ERROR SUMMARY" "$OUT/memcheck.log"
step ab 200 bash bench/ab_env.sh "--configs 0,1,3,9,12,13" 3 CUPYMLA_PARTIALS=fp32 -
step bench 90 python3 -m cupymla bench --no-torch --out "$OUT"
echo "== error, fp32 partials"; CUPYMLA_PARTIALS=fp32 timeout 90 python3 bench/acc_error.py 2>&1 | tail -7
echo "== error, default (16-bit on seesaw plans)"; timeout 90 python3 bench/acc_error.py 2>&1 | tail -7

#!/usr/bin/env bash
# Session 11: MLA_ACC16 (16-bit partials): error against the oracle, GPU decode tests, A/B.
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
K=decode_sm90_seesaw64.cu:MLA_ACC16=1,decode_sm90_seesaw.cu:MLA_ACC16=1,decode_sm90_narrow.cu:MLA_ACC16=1,decode_sm90.cu:MLA_ACC16=1,combine.cu:MLA_ACC16=1
echo "== error, default"; timeout 120 python3 bench/acc_error.py 2>&1 | tail -8
echo "== error, ACC16"; CUPYMLA_DEFINES=$K timeout 120 python3 bench/acc_error.py 2>&1 | tail -8
t0=$SECONDS; CUPYMLA_DEFINES=$K timeout 200 python3 -m pytest tests/test_gpu_decode.py tests/test_gpu_properties.py -q -x > $OUT/acc16_tests.log 2>&1
echo "== ACC16 decode+property tests rc=$? $((SECONDS-t0))s: $(tail -1 $OUT/acc16_tests.log)"
timeout 300 bash bench/ab_env.sh "--configs 0,1,3,5,9,10,12,13" 3 - "CUPYMLA_DEFINES=$K" 2>&1 | tee $OUT/ab.log | grep -v "^b" 

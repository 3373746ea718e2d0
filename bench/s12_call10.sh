#!/usr/bin/env bash
# Session 12: the narrow kernel's maps with 128-byte L2 promotion (the plan's new choice) against
# 256 (as before), and the kernel with its KV copies faked (MLA_FAKE_KV_LOAD: every tile "lands"
# at once with stale data, timing only: what its products and softmax alone take).
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
step ab 400 bash bench/ab_env.sh "--configs 5,6,7,8,10" 3 CUPYMLA_L2_PROMOTION=256 - \
    CUPYMLA_DEFINES=decode_sm90_narrow.cu:MLA_FAKE_KV_LOAD=1
grep -E "^== check" $OUT/ab.log; echo
python3 bench/ab_summary.py $OUT/ab.log

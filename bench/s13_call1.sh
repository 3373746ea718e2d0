#!/usr/bin/env bash
# (MLA_SCORE_ACCS and MLA_PV_KT_OUTER measured level and were removed after this call: this script
# no longer reproduces; results in bench/results/h200-variants-2026-11-29-s13.txt.)
# Session 13, call 1: the narrow kernel's score products dealt to 2 or 4 accumulators
# (MLA_SCORE_ACCS) and its P.V products issued k step outermost (MLA_PV_KT_OUTER, consecutive
# products into different accumulators), against the default; the same with the copies faked
# (MLA_FAKE_KV_LOAD, timing only) to see the math alone.
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
N=decode_sm90_narrow.cu
step ab 560 bash bench/ab_env.sh "--configs 5,6,7,8,10" 3 - \
    CUPYMLA_DEFINES=$N:MLA_SCORE_ACCS=2 \
    CUPYMLA_DEFINES=$N:MLA_SCORE_ACCS=4 \
    CUPYMLA_DEFINES=$N:MLA_PV_KT_OUTER=1 \
    CUPYMLA_DEFINES=$N:MLA_SCORE_ACCS=2,$N:MLA_PV_KT_OUTER=1 \
    CUPYMLA_DEFINES=$N:MLA_FAKE_KV_LOAD=1 \
    CUPYMLA_DEFINES=$N:MLA_FAKE_KV_LOAD=1,$N:MLA_SCORE_ACCS=2,$N:MLA_PV_KT_OUTER=1
grep -E "^== check" $OUT/ab.log; echo
python3 bench/ab_summary.py $OUT/ab.log

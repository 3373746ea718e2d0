#!/usr/bin/env bash
# Session 12, call 3: the many-sequence combine (combine.cu, MLA_COMBINE_WIDE=0) with fewer pieces
# read at once (MLA_COMBINE_UNROLL) and a register cap (MLA_COMBINE_MIN_CTAS), so that more of its
# CTAs are resident when the decode ends: combine share and alternating A/B.
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
C=combine.cu
V1="CUPYMLA_DEFINES=$C:MLA_COMBINE_UNROLL=2"
V2="CUPYMLA_DEFINES=$C:MLA_COMBINE_UNROLL=2,$C:MLA_COMBINE_MIN_CTAS=10"
combine_shares "128 1 128 4096 1;128 2 128 4096 1;32 1 128 1024 1;128 4 16 8192 1" - "$V1" "$V2" | tee $OUT/share.log
step ab 400 bash bench/ab_env.sh "--configs 0,3,12,13,11" 3 - "$V1" "$V2"
echo; grep -E "^== check" $OUT/ab.log; echo
python3 bench/ab_summary.py $OUT/ab.log

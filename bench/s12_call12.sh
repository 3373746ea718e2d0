#!/usr/bin/env bash
# Session 12: the narrow kernel refilling a stage as soon as its tile is multiplied (two tiles in
# flight while the next is awaited; MLA_REFILL_AT_END), with the maps' 128-byte promotion (now the
# plan's choice) and with 256 (session 3 measured it 2% slower then).
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
R=CUPYMLA_DEFINES=decode_sm90_narrow.cu:MLA_REFILL_AT_END=1
step ab 400 bash bench/ab_env.sh "--configs 5,6,7,8,10" 3 - "$R" "CUPYMLA_L2_PROMOTION=256 $R"
grep -E "^== check" $OUT/ab.log; echo
python3 bench/ab_summary.py $OUT/ab.log

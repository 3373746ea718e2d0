#!/usr/bin/env bash
# Session 12: the maps' L2 promotion (bench/tma_order.py: 256 B streams random pages at ~4.1 TB/s,
# 0/64/128 B at ~4.48): self-check and alternating A/B on every benchmark row.
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
step ab 500 bash bench/ab_env.sh "" 2 CUPYMLA_L2_PROMOTION=256 CUPYMLA_L2_PROMOTION=128 CUPYMLA_L2_PROMOTION=0
grep -E "^== check" $OUT/ab.log; echo
python3 bench/ab_summary.py $OUT/ab.log

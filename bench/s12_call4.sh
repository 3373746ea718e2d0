#!/usr/bin/env bash
# Session 12, call 4: GPU suite on the combine with 2 pieces at once (narrow shape) and packed
# 16-bit values; the wide shape with 256 / 512 columns a CTA (MLA_COMBINE_COLS; fewer CTAs, so
# fewer waves once the decode ends): combine share and alternating A/B on the few-sequence rows.
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
step suite 300 python3 -m pytest tests -m gpu -q -x
C=combine.cu
V1="CUPYMLA_DEFINES=$C:MLA_COMBINE_COLS=256"
V2="CUPYMLA_DEFINES=$C:MLA_COMBINE_COLS=512"
combine_shares "8 1 128 32768 0;1 1 16 65536 0;16 1 128 8192 1" - "$V1" "$V2" | tee $OUT/share.log
step ab 300 bash bench/ab_env.sh "--configs 9,10,11" 3 - "$V1" "$V2"
echo; grep -E "^== check" $OUT/ab.log; echo
python3 bench/ab_summary.py $OUT/ab.log

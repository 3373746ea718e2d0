#!/usr/bin/env bash
# Session 13, call 5: the narrow rows under schedules with a smaller fixed overhead a piece
# (bench/fixed_cost.py, FIXED_OVERHEAD 5 = metadata.cu's, against 1, 2, 3), twice in opposite
# orders.
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
ROWS=128x4K-h16-var,128x8K-h16-var,64x8K-h32,1x64K-h16
timeout 250 python3 bench/fixed_cost.py --rows $ROWS --fixed-overhead 5,3,2,1 2>&1 | tee $OUT/fo1.txt
timeout 250 python3 bench/fixed_cost.py --rows $ROWS --fixed-overhead 1,2,3,5 2>&1 | tee $OUT/fo2.txt

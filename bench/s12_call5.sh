#!/usr/bin/env bash
# Session 12, call 5: GPU suite with the combine's new shapes (2 pieces at once; wide CTAs of 256
# columns where the grid still fills the SMs), then bench/tma_order.py (DRAM rate by box order).
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
step suite 300 python3 -m pytest tests -m gpu -q -x
step tma_order 120 python3 bench/tma_order.py
cat $OUT/tma_order.log

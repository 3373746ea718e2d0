#!/usr/bin/env bash
# Session 13, call 11: metadata.cu with one deal loop (deal_part, shared by covers() and the
# deal): the twin test and the GPU suite; then h_q32's CTA clocks in three processes (are the
# slowest CTAs on the same SMs every time?).
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
step twin 120 python3 -m pytest tests/test_gpu_decode.py -q -x -k "metadata"
step suite 250 python3 -m pytest tests -m gpu -q -x
for i in 1 2 3; do timeout 60 python3 bench/clock_probe.py 64 1 32 8192 20 0 2>&1 | grep -E "^b64|slowest|fastest" | cut -c1-330; done

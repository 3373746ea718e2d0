#!/usr/bin/env bash
# Session 13, call 6: where the narrow rows' time goes outside the tile loop: phases of the last
# flushed call (bench/phase_probe.py) and CTA clocks (bench/clock_probe.py) for b1, h_q16 4K, h_q32.
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
for shape in "1 1 16 65536 0" "128 1 16 4096 1" "64 1 32 8192 0"; do
  timeout 100 python3 bench/phase_probe.py $shape 2>&1 | tail -14
  timeout 100 python3 bench/clock_probe.py $shape 2>&1 | sed 's/^b[0-9]* s_q/clocks: &/' | tail -4 | cut -c1-400
done

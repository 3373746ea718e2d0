#!/usr/bin/env bash
# Session 13, call 2: the narrow kernel's tile by phase (bench/phase_probe.py), real and with the
# copies faked, for h_q32 (b64 8K) and h_q16 (b128 8K varlen).
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
N=decode_sm90_narrow.cu
for shape in "64 1 32 8192 0" "128 1 16 8192 1"; do
  timeout 100 python3 bench/phase_probe.py $shape 2>&1 | tail -12
  CUPYMLA_DEFINES=$N:MLA_FAKE_KV_LOAD=1 timeout 100 python3 bench/phase_probe.py $shape 2>&1 | tail -12
done

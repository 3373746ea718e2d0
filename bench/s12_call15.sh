#!/usr/bin/env bash
# Session 12: the narrow kernel's 32-row variant with two warpgroups of 16 rows (m64n16k16
# products each) instead of one of m64n32k16: self-check, decode and property tests, then
# alternating runs against HEAD's tree (s12_head.tar, git archive of 48ba664).
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
step check 150 python3 -m cupymla check
step tests 300 python3 -m pytest tests/test_gpu_decode.py tests/test_gpu_properties.py -q -x
step ab 300 bash bench/ab.sh s12_head.tar "--configs 8,5,10" 3
cat $OUT/ab.log | grep -E "^==|^b"

#!/usr/bin/env bash
# Session 13, call 7: the narrow kernel's start (the first tile's page read alongside seek()'s
# loads; the first q asked for before the piece is read): A/B against f6f1287 (s13_head2.tar),
# b1's phases, the GPU suite and memcheck on the narrow start cases.
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
START="(test_page_sizes and heads0) or test_some_lengths_zero or test_many_short or (test_large_logits and narrow)"
step check 120 python3 -m cupymla check
step ab 200 bash bench/ab.sh s13_head2.tar "--configs 5,6,7,8,10" 3
step phases 60 python3 bench/phase_probe.py 1 1 16 65536 0
step suite 250 python3 -m pytest tests -m gpu -q -x
step memcheck_start 200 compute-sanitizer --tool memcheck --report-api-errors no python3 -m pytest tests/test_gpu_decode.py -q -x -k "$START"
step synccheck_start 200 compute-sanitizer --tool synccheck --report-api-errors no python3 -m pytest tests/test_gpu_decode.py -q -x -k "$START"
tail -14 $OUT/phases.log
grep -E "^==|^b" $OUT/ab.log

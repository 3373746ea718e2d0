#!/usr/bin/env bash
# Session 13, last call: validate the final tree (GPU suite, slack-0 self-check, memcheck on the
# self-check), then the full benchmark runs for the README: bf16 pages of 64 (twice), 32, 128, fp16.
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
nvidia-smi --query-gpu=name,clocks.max.sm,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
step suite 250 python3 -m pytest tests -m gpu -q -x
step slack0 90 env CUPYMLA_DEFINES="decode_sm90_seesaw.cu:MLA_MAX_SLACK=0.0f,decode_sm90_seesaw64.cu:MLA_MAX_SLACK=0.0f" python3 -m cupymla check
step memcheck 120 compute-sanitizer --tool memcheck --report-api-errors no python3 -m cupymla check
step bench 150 python3 -m cupymla bench --no-torch --out "$OUT/p64" --page-size 64
step bench2 150 python3 -m cupymla bench --no-torch --no-plot --out "$OUT/p64b" --page-size 64
step bench_p32 150 python3 -m cupymla bench --no-torch --no-plot --out "$OUT/p32" --page-size 32
step bench_p128 150 python3 -m cupymla bench --no-torch --no-plot --out "$OUT/p128" --page-size 128
step bench_fp16 150 python3 -m cupymla bench --no-torch --no-plot --out "$OUT/fp16" --dtype fp16
grep -E "^b[0-9]" $OUT/bench.log | cut -c1-150 | head -16

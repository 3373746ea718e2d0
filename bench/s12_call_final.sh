#!/usr/bin/env bash
# Session 12, last call: validate the final tree (GPU suite, slack-0 self-check, sanitizers on the
# self-check and on the narrow kernel's page-size tests), then the full benchmark runs for the
# README: bf16 pages of 64 (twice), 32, 128, and fp16.
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
nvidia-smi --query-gpu=name,clocks.max.sm,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
step suite 300 python3 -m pytest tests -m gpu -q -x
step slack0 90 env CUPYMLA_DEFINES="decode_sm90_seesaw.cu:MLA_MAX_SLACK=0.0f,decode_sm90_seesaw64.cu:MLA_MAX_SLACK=0.0f" python3 -m cupymla check
for tool in memcheck racecheck synccheck; do
  step "$tool" 150 compute-sanitizer --tool "$tool" --report-api-errors no python3 -m cupymla check
done
step memcheck_narrow 200 compute-sanitizer --tool memcheck --report-api-errors no python3 -m pytest tests/test_gpu_decode.py -q -x -k "test_page_sizes and heads0"
step synccheck_narrow 200 compute-sanitizer --tool synccheck --report-api-errors no python3 -m pytest tests/test_gpu_decode.py -q -x -k "test_page_sizes and heads0"
grep -h "Race reported\|RACECHECK SUMMARY" "$OUT"/racecheck.log | sed 's/0x[0-9a-f]*//g' | sort | uniq -c | head
step bench 150 python3 -m cupymla bench --no-torch --out "$OUT/p64" --page-size 64
step bench2 150 python3 -m cupymla bench --no-torch --no-plot --out "$OUT/p64b" --page-size 64
step bench_p32 150 python3 -m cupymla bench --no-torch --no-plot --out "$OUT/p32" --page-size 32
step bench_p128 150 python3 -m cupymla bench --no-torch --no-plot --out "$OUT/p128" --page-size 128
step bench_fp16 150 python3 -m cupymla bench --no-torch --no-plot --out "$OUT/fp16" --dtype fp16
grep -E "^b[0-9]" $OUT/bench.log | cut -c1-150 | head -16

#!/usr/bin/env bash
# Session 13, call 4: validate the narrow kernel with its producer warp and lazy rescaling (the
# working tree) and time it against HEAD (s13_head.tar = git archive of 3c3fcca) in alternating
# runs; then the GPU suite, sanitizers on the self-check and the narrow tests, and h_q32's CTA
# clocks (bench/clock_probe.py).
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
NARROW="(test_page_sizes and heads0) or (test_large_logits and narrow)"
step check 120 python3 -m cupymla check
step ab 200 bash bench/ab.sh s13_head.tar "--configs 5,6,7,8,10" 3
step suite 250 python3 -m pytest tests -m gpu -q -x
for tool in memcheck racecheck synccheck; do
  step "${tool}_narrow" 150 compute-sanitizer --tool "$tool" --report-api-errors no python3 -m pytest tests/test_gpu_decode.py -q -x -k "$NARROW"
done
step racecheck_check 150 compute-sanitizer --tool racecheck --report-api-errors no python3 -m cupymla check
grep -h "Race reported\|RACECHECK SUMMARY\|ERROR SUMMARY" "$OUT"/*check*.log | sed 's/0x[0-9a-f]*//g' | sort | uniq -c | head
step clocks 60 python3 bench/clock_probe.py 64 1 32 8192 10 0
cat $OUT/clocks.log | tail -5
grep -E "^==|^b" $OUT/ab.log

#!/usr/bin/env bash
# One device call that validates a kernel change before any timing: the GPU suite, the self-check
# with every rescale forced (slack 0), then compute-sanitizer memcheck/racecheck/synccheck on the
# self-check. Every step has its own timeout so a hang costs one step, not the call.
#   bash bench/device_validate.sh            (on the device machine, from the repo root; logs in $OUT)
set -u
OUT=${OUT:-/tmp/cupymla-out}; mkdir -p "$OUT"
export PYTHONPATH=.
source bench/step.sh
nvidia-smi --query-gpu=name,clocks.max.sm,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
git log --oneline -1 2>/dev/null | tee -a "$OUT/gpu.txt"
step suite 200 python3 -m pytest tests -m gpu -q -x
step slack0 90 env CUPYMLA_DEFINES="decode_sm90_seesaw.cu:MLA_MAX_SLACK=0.0f,decode_sm90_seesaw64.cu:MLA_MAX_SLACK=0.0f" python3 -m cupymla check
for tool in memcheck racecheck synccheck; do
  step "$tool" 120 compute-sanitizer --tool "$tool" --report-api-errors no python3 -m cupymla check
done
tail -4 "$OUT"/memcheck.log "$OUT"/racecheck.log "$OUT"/synccheck.log

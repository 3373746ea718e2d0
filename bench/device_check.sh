#!/usr/bin/env bash
# One device call: building blocks, the GPU test suite, then the benchmark; logs under $OUT.
#   bash bench/device_check.sh [pytest-args...]     (on the device machine, from the repo root)
# Env: SUITE_TIMEOUT (s, default 300), BENCH_ARGS (default: all rows, no torch peer), BENCH_TIMEOUT.
set -u
OUT=${OUT:-/tmp/cupymla-out}; mkdir -p "$OUT"
export PYTHONPATH=.
nvidia-smi --query-gpu=name,clocks.max.sm,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
timeout 120 python3 -m pytest tests/test_gpu_sm90_blocks.py -q 2>&1 | tail -5 | tee "$OUT/blocks.log"
timeout "${SUITE_TIMEOUT:-300}" python3 -m pytest tests -m gpu -q --maxfail=3 "$@" > "$OUT/suite.log" 2>&1
echo "suite rc=$?"; tail -15 "$OUT/suite.log"
timeout "${BENCH_TIMEOUT:-300}" python3 -m cupymla bench --no-torch --out "$OUT" ${BENCH_ARGS:-} > "$OUT/bench.log" 2>&1
echo "bench rc=$?"; tail -40 "$OUT/bench.log"

#!/usr/bin/env bash
# Session 13, call 12 (after the review's refactors): the self-check, the 16-bit partials tests,
# and the two probes that now share their set-up (clock_probe.instrumented_call).
set -u
export PYTHONPATH=.
python3 -m cupymla check 2>&1 | tail -1
python3 -m pytest tests/test_gpu_partials.py tests/test_gpu_decode.py -q -x -k "partials or metadata or page_sizes" 2>&1 | tail -1
timeout 60 python3 bench/phase_probe.py 64 1 32 8192 0 2>&1 | tail -14
timeout 60 python3 bench/clock_probe.py 64 1 32 8192 20 0 2>&1 | grep -E "^b64|slowest" | cut -c1-250

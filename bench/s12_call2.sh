#!/usr/bin/env bash
# Session 12, call 2: the narrow kernel refilling its free stage during a sequence's epilogue
# (MLA_SWITCH_AHEAD): self-check, decode tests, alternating A/B; the combine's share with 16-bit
# partials (4K, b32, b8) and clocks/power under load at HEAD.
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
N=decode_sm90_narrow.cu
step check 150 python3 -m cupymla check
step tests 200 python3 -m pytest tests/test_gpu_decode.py -q -x
step ab 300 bash bench/ab_env.sh "--configs 5,6,7,8,10" 3 "CUPYMLA_DEFINES=$N:MLA_SWITCH_AHEAD=0" -
step share_4k 60 python3 bench/combine_share.py 128 1 128 4096 1
step share_b32 60 python3 bench/combine_share.py 32 1 128 1024 1
step share_b8 60 python3 bench/combine_share.py 8 1 128 32768 0
step power 120 python3 bench/power_probe.py 4 0 3 9
echo; grep -E "^== check" $OUT/ab.log; echo
for f in share_4k share_b32 share_b8; do tail -1 $OUT/$f.log; done
echo "== power"; tail -12 $OUT/power.log
echo; python3 bench/ab_summary.py $OUT/ab.log

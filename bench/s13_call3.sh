#!/usr/bin/env bash
# (The two knobs were made the only code after this call: MLA_PRODUCER / MLA_LAZY_RESCALE no
# longer exist; results in bench/results/h200-variants-2026-11-29-s13.txt.)
# Session 13, call 3: the narrow kernel with a producer warp (MLA_PRODUCER: a fifth warp asks for
# the tiles, consumers release stages on mbarriers, no end-of-tile barrier) and with lazy rescaling
# (MLA_LAZY_RESCALE: the exponentials' base moves only when the maximum climbs 8 above it), A/B
# against the default, then where the tile goes with both (bench/phase_probe.py).
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
N=decode_sm90_narrow.cu
step ab 420 bash bench/ab_env.sh "--configs 5,6,7,8,10" 3 - \
    CUPYMLA_DEFINES=$N:MLA_PRODUCER=1 \
    CUPYMLA_DEFINES=$N:MLA_LAZY_RESCALE=1 \
    CUPYMLA_DEFINES=$N:MLA_PRODUCER=1,$N:MLA_LAZY_RESCALE=1
for shape in "64 1 32 8192 0" "128 1 16 8192 1"; do
  CUPYMLA_DEFINES=$N:MLA_PRODUCER=1,$N:MLA_LAZY_RESCALE=1 timeout 100 python3 bench/phase_probe.py $shape 2>&1 | tail -12
done
grep -E "^== check" $OUT/ab.log; echo
python3 bench/ab_summary.py $OUT/ab.log

#!/usr/bin/env bash
# Session 12, call 1: the narrow kernel's next q loaded a sequence ahead (MLA_Q_AHEAD) and its
# epilogue's 4-column stores (MLA_EPI8): self-check, error against the oracle, alternating A/B;
# then the combine's share with 16-bit partials at HEAD.
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
N=decode_sm90_narrow.cu
step check 150 python3 -m cupymla check
step check16 150 env CUPYMLA_PARTIALS=16 python3 -m cupymla check
step err 120 python3 bench/acc_error.py
step err16 120 env CUPYMLA_PARTIALS=16 python3 bench/acc_error.py
step ab 330 bash bench/ab_env.sh "--configs 5,6,7,8,10" 3 "CUPYMLA_DEFINES=$N:MLA_Q_AHEAD=0,$N:MLA_EPI8=0" \
    "CUPYMLA_DEFINES=$N:MLA_EPI8=0" - "CUPYMLA_PARTIALS=16"
step share_b1 60 python3 bench/combine_share.py 1 1 16 65536 0
echo; grep -E "^==" $OUT/ab.log; echo
for f in err err16; do echo "== $f"; grep -v "^$" $OUT/$f.log | tail -8; done
echo "== share b1"; tail -5 $OUT/share_b1.log
echo; python3 bench/ab_summary.py $OUT/ab.log

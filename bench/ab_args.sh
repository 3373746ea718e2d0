#!/usr/bin/env bash
# Compare bench argument sets (not kernel knobs: bench/variants.sh does those) in alternating runs
# of one device call, e.g. bf16 against fp16 or page 64 against page 32:
#   bash bench/ab_args.sh "--configs 0,3,5" ROUNDS "--dtype bf16" "--dtype fp16"
set -u
common=$1; rounds=$2; shift 2
export PYTHONPATH=.
for ((r = 1; r <= rounds; r++)); do
    for a in "$@"; do
        echo "== round $r: $a"
        timeout 150 python3 -m cupymla bench --no-torch --no-graph --no-plot --no-check \
            --out "$(mktemp -d)" $common $a 2>&1 | grep -E "^b[0-9]|rror" | cut -c1-60
    done
done

#!/usr/bin/env bash
# Compare environment settings (e.g. kernel choices) in alternating runs of one device call; each
# setting is first checked against the reference by `python -m cupymla check`:
#   bash bench/ab_env.sh "--configs 0,3,9" ROUNDS "CUPYMLA_SM90_SEESAW64=0" "CUPYMLA_SM90_SEESAW64=1"
# A setting is a space-separated list of VAR=value ("-" for none).
set -u
args=$1; rounds=$2; shift 2
export PYTHONPATH=.
for v in "$@"; do
    e=$([ "$v" = "-" ] && echo "" || echo "$v")
    echo "== check $v: $(env $e timeout 120 python3 -m cupymla check 2>&1 | tail -1)"
done
for ((r = 1; r <= rounds; r++)); do
    for v in "$@"; do
        e=$([ "$v" = "-" ] && echo "" || echo "$v")
        echo "== round $r: $v"
        env $e timeout 150 python3 -m cupymla bench --no-torch --no-graph --no-plot --no-check \
            --out "$(mktemp -d)" $args 2>&1 | grep -E "^b[0-9]|rror" | cut -c1-60
    done
done

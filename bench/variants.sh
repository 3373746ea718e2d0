#!/usr/bin/env bash
# Compare kernel variants (compile-time knobs, kernels.extra_defines) in alternating runs of one
# device call; each variant is first checked against the reference by `python -m cupymla check`.
#   bash bench/variants.sh "--configs 0,2,3" ROUNDS "file.cu:A=1" "file.cu:A=1,file.cu:B=2" ...
# "-" stands for no extra defines. Env (e.g. CUPYMLA_SM90_SEESAW=1) applies to every run.
set -u
args=$1; rounds=$2; shift 2
export PYTHONPATH=.
for v in "$@"; do
    d=$([ "$v" = "-" ] && echo "" || echo "$v")
    echo "== check $v: $(CUPYMLA_DEFINES=$d timeout 120 python3 -m cupymla check 2>&1 | tail -1)"
done
for ((r = 1; r <= rounds; r++)); do
    for v in "$@"; do
        d=$([ "$v" = "-" ] && echo "" || echo "$v")
        echo "== round $r: $v"
        CUPYMLA_DEFINES=$d timeout 150 python3 -m cupymla bench --no-torch --no-graph --no-plot --no-check \
            --out "$(mktemp -d)" $args 2>&1 | grep -E "^b[0-9]|rror" | cut -c1-60
    done
done

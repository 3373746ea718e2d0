#!/usr/bin/env bash
# Compare two source trees on the same GPU in one device call, in alternating runs (calls land on
# different machines, whose speeds differ by a few per cent: only same-call comparisons count).
#   here:       git archive <rev or branch> -o other.tar    (an untracked file: it travels)
#   on the GPU: bash bench/ab.sh other.tar "--configs 0,3,9,13 --page-size 32" [rounds=2]
# Prints the summary rows of each run: "this" is the working tree, "other" the archive.
set -u
archive=${1:?archive of the other tree}; args=${2:-}; rounds=${3:-2}
other=$(mktemp -d); tar xf "$archive" -C "$other"
for ((r = 1; r <= rounds; r++)); do
    for tree in "$PWD" "$other"; do
        label=$([ "$tree" = "$PWD" ] && echo this || echo other)
        echo "== round $r: $label"
        (cd "$tree" && PYTHONPATH=. python3 -m cupymla bench --no-torch --no-graph --no-plot --no-check \
            --out "$(mktemp -d)" $args 2>&1) | grep -E "^b[0-9]|rror|no CUDA GPU" | cut -c1-80
    done
done

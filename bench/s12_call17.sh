#!/usr/bin/env bash
# Session 12: the narrow kernel without the tile-landed barrier where no thread wrote what the
# products read (full tiles after a sequence's first): self-check, A/B against HEAD's tree
# (s12_head.tar = git archive of 6bbc835), then the GPU suite.
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
source bench/step.sh
step check 150 python3 -m cupymla check
step ab 200 bash bench/ab.sh s12_head.tar "--configs 5,6,7,8,10" 2
step suite 250 python3 -m pytest tests -m gpu -q -x
grep -E "^==|^b" $OUT/ab.log

#!/usr/bin/env bash
# Session 12: the full benchmark runs for the README (bf16 pages of 64 twice, 32, 128; fp16),
# only their JSON files and the p64 plot under $OUT (the device tool returns a few files a call).
set -u
OUT=${OUT:-/tmp/o}; mkdir -p "$OUT"; export PYTHONPATH=.
W=$(mktemp -d)
run() { local name=$1; shift; timeout 150 python3 -m cupymla bench --no-torch --out "$W/$name" "$@" > "$W/$name.log" 2>&1
        echo "$name rc=$?"; cp "$W/$name"/*.json "$OUT/"; }
run p64 --page-size 64
cp "$W/p64"/*.png "$OUT/"
run p64b --no-plot --page-size 64
run p32 --no-plot --page-size 32
run p128 --no-plot --page-size 128
run fp16 --no-plot --dtype fp16
grep -E "^b[0-9]" "$W/p64.log" | cut -c1-150 | head -16
grep -E "^b[0-9]" "$W/p64b.log" | cut -c1-60 | head -16

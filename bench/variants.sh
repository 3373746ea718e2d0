#!/usr/bin/env bash
# Compare kernel variants (compile-time knobs, kernels.extra_defines) in alternating runs of one
# device call, each first checked against the reference (bench/ab_env.sh does the runs):
#   bash bench/variants.sh "--configs 0,2,3" ROUNDS "file.cu:A=1" "file.cu:A=1,file.cu:B=2" ...
# "-" stands for no extra defines. Env (e.g. CUPYMLA_SM90_SEESAW=1) applies to every run.
set -u
args=$1; rounds=$2; shift 2
settings=()
for v in "$@"; do settings+=("CUPYMLA_DEFINES=$([ "$v" = "-" ] || echo "$v")"); done
exec bash "$(dirname "$0")/ab_env.sh" "$args" "$rounds" "${settings[@]}"

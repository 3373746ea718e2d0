#!/usr/bin/env bash
# Are the bimodal rows (16K, causal 8K) an L2 effect? One ncu-profiled decode call per process,
# several processes of the same seeded inputs: if the slow processes read more from DRAM (the
# second m tile's copies missing L2), the time and dram__bytes_read move together.
#   bash bench/bimodal_l2.sh [PROCESSES] [ARGS of profile_one.py ...]   (device machine, repo root)
set -u
n=${1:-4}; shift || true
args=${*:-128 1 128 16384}
OUT=${OUT:-/tmp/cupymla-out}; mkdir -p "$OUT"
export PYTHONPATH=.
m=gpu__time_duration.sum,dram__bytes_read.sum,lts__t_sector_hit_rate.pct,lts__t_sectors_srcunit_tex_op_read.sum,sm__cycles_elapsed.avg.per_second
for ((i = 1; i <= n; i++)); do
    log="$OUT/ncu-$(echo "$args" | tr ' ' _)-$i.log"
    timeout 120 ncu --clock-control none --cache-control none -k regex:mla_decode --launch-skip 3 \
        --launch-count 1 --metrics "$m" python3 bench/profile_one.py $args > "$log" 2>&1
    echo "[$args] process $i: $(grep -E 'gpu__time_duration|dram__bytes_read|hit_rate|srcunit_tex_op_read|per_second' "$log" | awk '{print $1"="$(NF)" "$(NF-1)}' | tr '\n' ' ')"
done

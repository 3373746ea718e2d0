#!/usr/bin/env bash
# ncu on one decode call: warp-state summary plus per-SASS-instruction stall samples (CSV).
#   bash bench/ncu_sass.sh NAME b s_q h_q s_k      (on the device machine; files under $OUT)
set -u
OUT=${OUT:-/tmp/cupymla-out}; name=$1; shift
export PYTHONPATH=.
ncu --clock-control none -k regex:mla_decode --launch-skip 3 --launch-count 1 \
    --section WarpStateStats --section SourceCounters --section ComputeWorkloadAnalysis \
    --metrics sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed \
    -f -o "$OUT/$name" python3 bench/profile_one.py "$@" > "$OUT/$name-run.log" 2>&1
ncu -i "$OUT/$name.ncu-rep" --page details > "$OUT/$name-details.txt" 2>&1
ncu -i "$OUT/$name.ncu-rep" --page source --csv --print-source sass > "$OUT/$name-sass.csv" 2>&1
rm -f "$OUT/$name.ncu-rep"
grep -E "Duration|tensor_op|dram__|Warp Cycles Per Issued|Issued Warp" "$OUT/$name-details.txt" | head

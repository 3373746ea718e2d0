#!/usr/bin/env bash
# Does a row's time follow the SM clock? Runs `python -m cupymla bench --configs C` in several
# processes while nvidia-smi samples the SM clock, power and throttle reasons every 20 ms; prints
# each process's row time next to the median clock and power of the busy samples (> 250 W).
#   bash bench/clock_watch.sh "0,2" 3      (device machine, repo root; raw samples under $OUT)
set -u
configs=${1:-2}; n=${2:-3}
OUT=${OUT:-/tmp/cupymla-out}; mkdir -p "$OUT"
export PYTHONPATH=.
q=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_event_reasons.sw_power_cap,clocks_event_reasons.hw_slowdown,clocks_event_reasons.sw_thermal_slowdown
for c in ${configs//,/ }; do
  for ((i = 1; i <= n; i++)); do
    s="$OUT/clocks-c$c-$i.csv"
    nvidia-smi --query-gpu=$q --format=csv,noheader,nounits -lms 20 > "$s" &
    pid=$!
    row=$(timeout 150 python3 -m cupymla bench --no-torch --no-graph --no-plot --no-check \
          --out "$(mktemp -d)" --configs "$c" 2>&1 | grep -E "^b[0-9]" | cut -c1-70)
    kill $pid; wait $pid 2>/dev/null
    python3 - "$s" "$row" <<'PY'
import sys, statistics as st
rows = [l.split(", ") for l in open(sys.argv[1]) if l.count(",") >= 6]
busy = [r for r in rows if float(r[2]) > 250]
if not busy:
    print(sys.argv[2], "| no busy samples"); sys.exit()
clk = [float(r[1]) for r in busy]; pw = [float(r[2]) for r in busy]
cap = sum(r[4].strip() == "Active" for r in busy); hw = sum(r[5].strip() == "Active" or r[6].strip() == "Active" for r in busy)
print(f"{sys.argv[2]} | busy {len(busy)} samples: clock median {st.median(clk):.0f} MHz (min {min(clk):.0f}),"
      f" power median {st.median(pw):.0f} W max {max(pw):.0f}, temp {max(float(r[3]) for r in busy):.0f} C,"
      f" power-cap {cap}, hw/thermal {hw}")
PY
  done
done

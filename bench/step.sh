# Sourced by the device-call scripts in bench/: `step NAME TIMEOUT CMD...` runs CMD with its own
# timeout (a hang costs one step, not the call), its output in $OUT/NAME.log, and prints one line:
# the step, its exit status, its seconds and the log's last line (also appended to $OUT/summary.txt).
step() {
  local name=$1 t=$2; shift 2
  local t0=$SECONDS
  timeout "$t" "$@" > "$OUT/$name.log" 2>&1; local rc=$?
  printf '%-12s rc=%-3s %4ss  %s\n' "$name" "$rc" "$((SECONDS - t0))" "$(tail -1 "$OUT/$name.log")" | tee -a "$OUT/summary.txt"
}

# `combine_shares "SHAPE;SHAPE;..." SETTING...`: bench/combine_share.py for every setting (a
# space-separated VAR=value list, "-" for none, as in ab_env.sh) and shape, a line each.
combine_shares() {
  local shapes=$1 v e shape list; shift
  IFS=';' read -ra list <<< "$shapes"
  for v in "$@"; do
    e=$([ "$v" = "-" ] && echo "" || echo "$v")
    for shape in "${list[@]}"; do
      echo "$v | $(env $e timeout 60 python3 bench/combine_share.py $shape 2>&1 | tail -1)"
    done
  done
}

"""Summarise the per-instruction CSV of bench/ncu_sass.sh: where the warp stall samples fall.

    python3 bench/ncu_summary.py NAME-sass.csv [TOP=25]

Prints the header's sampling columns, the samples by opcode, and the TOP instructions by samples
with their address and SASS (the CSV's column names differ between ncu versions: matched loosely).
"""

import csv
import sys
from collections import Counter


def main(path, top=25):
    with open(path, newline="") as f:
        rows = [r for r in csv.reader(f)]
    start = next(i for i, r in enumerate(rows) if any("Source" == c.strip() for c in r))
    head, body = rows[start], [r for r in rows[start + 1:] if len(r) == len(rows[start])]
    col = {name: i for i, name in enumerate(head)}
    samp = next(i for n, i in col.items() if "Sampling" in n and "All" in n)
    src = col["Source"]
    addr = col.get("Address", 0)
    execd = next((i for n, i in col.items() if n.startswith("Instructions Executed")), None)

    def num(r, i):
        try:
            return float(r[i].replace(",", ""))
        except (ValueError, IndexError):
            return 0.0

    total = sum(num(r, samp) for r in body) or 1.0
    print(f"{path}: {len(body)} instructions, {total:.0f} samples")
    reasons = {n: i for n, i in col.items() if n.startswith("stall_") or "Stall" in n and n != head[samp]}
    sums = sorted(((sum(num(r, i) for r in body), n) for n, i in reasons.items()), reverse=True)
    print("columns: " + ", ".join(f"{n} {v:.0f}" for v, n in sums[:12]))
    by_op = Counter()
    for r in body:
        by_op[r[src].split()[0] if r[src].split() else "?"] += num(r, samp)
    print("samples by opcode: " + ", ".join(f"{op} {100 * v / total:.1f}%" for op, v in by_op.most_common(12)))
    if execd is not None:
        ex = Counter()
        for r in body:
            ex[r[src].split()[0] if r[src].split() else "?"] += num(r, execd)
        print(f"warp instructions executed: {sum(ex.values()) / 1e6:.1f} M; top: "
              + ", ".join(f"{op} {v / 1e6:.2f}M" for op, v in ex.most_common(8)))
    print(f"top {top} instructions by samples:")
    for r in sorted(body, key=lambda r: -num(r, samp))[:top]:
        print(f"  {100 * num(r, samp) / total:5.1f}%  {r[addr]:>8}  {r[src][:90]}")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))

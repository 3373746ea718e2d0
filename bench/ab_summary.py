"""Per setting and row, the µs of each round and their median, from the output of bench/ab_env.sh:

    bash bench/ab_env.sh ... | tee ab.log; python3 bench/ab_summary.py ab.log
"""

import re
import statistics
import sys
from collections import defaultdict


def main(path):
    runs = defaultdict(lambda: defaultdict(list))   # setting -> row -> [µs]
    rows = {}                                        # rows in the order first seen
    setting = None
    for line in open(path):
        m = re.match(r"== round \d+: (.*)", line)
        if m:
            setting = m.group(1).strip()
            continue
        m = re.match(r"(b\d+\S*)\s+([\d.]+)", line)
        if m and setting is not None:
            runs[setting][m.group(1)].append(float(m.group(2)))
            rows.setdefault(m.group(1))
    names = list(runs)
    for i, s in enumerate(names):
        print(f"[{i}] {s}")
    print(f"{'row':44s}" + "".join(f"{'[' + str(i) + '] median':>14s}" for i in range(len(names))))
    for r in rows:
        meds = [statistics.median(runs[s][r]) if runs[s][r] else float("nan") for s in names]
        base = meds[0]
        cells = "".join(f"{m:9.1f} {100 * (m / base - 1):+4.1f}%" if i else f"{m:14.1f}" for i, m in enumerate(meds))
        print(f"{r:44s}{cells}")
        print(f"{'':44s}" + "".join(f"{' '.join(f'{x:.1f}' for x in runs[s][r]):>14s}" for s in names))


if __name__ == "__main__":
    main(sys.argv[1])

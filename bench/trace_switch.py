"""Clock stamps of CTA 0's sequence switches in the seesaw kernel (built with MLA_TRACE=2).

    python3 bench/trace_switch.py [B=132 S_K=4096 H_Q=128]     (on a Hopper GPU, from the repo root)

Equal lengths, so CTA 0 (part 0) runs whole sequences. For each of its sequences, thread 0's
stamps relative to that sequence's stamp 0: 1 previous sequence done (barrier), 2 own q
chunks landed, 3 q in place for all, 4 first scores done, 5 pair loop done, 6 row sums added,
7 output stores issued; and the producer's (its own clock; compare within a column only):
12 starts the sequence, 13 first tile's buffer free, 14 first tile's copy issued. Then each
sequence's phases in clocks: q wait (1-3), first scores (3-4), pairs (4-5), epilogue (5-7),
and the gap from one sequence's stamp 7 to the next one's stamp 4 (the switch's cost
before the tensor cores are busy again).
"""

import os
import sys

os.environ.setdefault("CUPYMLA_REPLAY", "0")   # read when cupymla is imported

import cupy as cp  # noqa: E402
import numpy as np  # noqa: E402

from trace_seesaw import traced_run  # noqa: E402  (bench/, the script's own folder)


def main(b=132, s_k=4096, h_q=128):
    meta, mod = traced_run(2, b, s_k, h_q)
    print("part 0:", meta[0, :5].tolist())
    t = cp.ndarray((8, 16), cp.uint32, mod.get_global("mla_trace_seq")).get().astype(np.int64)
    n = int(meta[0, 2] - meta[0, 0] + 1)
    first = t[0, 0]
    for i in range(min(n, 8)):
        r = t[i]
        cons = " ".join(f"{int(x - r[0]):7d}" for x in r[1:8])
        prod = " ".join(f"{int(x - r[12]):7d}" for x in r[13:15])
        print(f"seq {i}: start +{int(r[0] - first):8d} | {cons} | producer start +{int(r[12] - t[0, 12]):8d}: {prod}")
    for i in range(min(n, 8)):
        r = t[i]
        gap = f", gap to next first scores {int(t[i + 1, 4] - r[7])}" if i + 1 < min(n, 8) else ""
        print(f"seq {i}: q wait {int(r[3] - r[1])}, first scores {int(r[4] - r[3])}, pairs {int(r[5] - r[4])}, "
              f"epilogue {int(r[7] - r[5])}{gap}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))

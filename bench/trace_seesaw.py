"""Clock stamps of a seesaw kernel's pairs (built with MLA_TRACE=1).

    python3 bench/trace_seesaw.py [B=8 S_K=32768 H_Q=128]     (on a Hopper GPU, from the repo root;
                                                               decode_sm90_seesaw64.cu, whose stamps
                                                               are listed above its MLA_TRACE)
    CUPYMLA_SM90_SEESAW64=0 python3 bench/trace_seesaw.py     (decode_sm90_seesaw.cu, stamps below)

Prints, for 8 consecutive pairs of CTA 0, each stamp's SM clock offset from its warpgroup's first
stamp of the pair (stamps never set print as large negative numbers). WG0: 0 scores of A done,
1 maxima posted, 2 P_A V_A,L issued, 3 P_A posted, 4 P_B seen, 5 P_A V_A,L done, 6 P_B V_B,L
issued, 7 next scores issued, 8 next scores done, 9 A's row maxima done, 10 next tile landed (its
scores waited until then). WG1: 0 pair start, 1 WG0's maxima seen, 2 P_B V_B,R issued, 3 P_A seen
(and P_B posted), 4 P_A V_A,R issued, 5 products done, 6 next scores issued, 7 next scores done,
10 next tile landed.

Compare stamps within one warpgroup: the two warpgroups' thread 0 read clocks that looked offset
by ~500-650 against each other (session 5: warpgroup 0 saw P_B before warpgroup 1's clock said
it was posted).
"""

import os
import sys

import cupy as cp
import ml_dtypes
import numpy as np

import cupymla
from cupymla import kernels
from tests.gpu_cases import make_inputs


SEESAW = "decode_sm90_seesaw.cu"
SEESAW64 = "decode_sm90_seesaw64.cu"


def traced_run(level, b, s_k, h_q, file=SEESAW):
    """Three calls on b sequences of s_k keys (h_q heads, s_q 1, pages of 64) with `file` (either
    seesaw kernel) built with MLA_TRACE=level; the run's other CUPYMLA_DEFINES are kept (read
    when the kernel is built). Returns the schedule (NumPy) and the traced module, whose globals
    hold the stamps."""
    os.environ["CUPYMLA_SM90_SEESAW64"] = "1" if file == SEESAW64 else "0"   # read when a plan is made
    os.environ["CUPYMLA_DEFINES"] = ",".join(filter(None, [os.environ.get("CUPYMLA_DEFINES", ""),
                                                            f"{file}:MLA_TRACE={level}"]))
    rng = np.random.default_rng(0)
    inp = make_inputs(rng, b, 1, h_q, 1, np.full(b, s_k, np.int32), 64, np.dtype(ml_dtypes.bfloat16), garbage=False)
    meta, splits = cupymla.get_mla_metadata(inp["cache_seqlens"], h_q, 1)
    for _ in range(3):
        cupymla.flash_mla_with_kvcache(inp["q"], inp["k_cache"], inp["block_table"], inp["cache_seqlens"], 512,
                                       meta, splits)
    cp.cuda.Device().synchronize()
    mod = next(m for k, m in kernels._modules.items()
               if k[1] == file and dict(k[2]).get("MLA_TRACE") == str(level))
    return cp.asnumpy(meta), mod


def main(b=8, s_k=32768, h_q=128):
    file = SEESAW if os.environ.get("CUPYMLA_SM90_SEESAW64") == "0" else SEESAW64
    _, mod = traced_run(1, b, s_k, h_q, file)
    n = 16 if file == SEESAW64 else 12
    t = cp.ndarray((2, 8, n), cp.uint32, mod.get_global("mla_trace")).get().astype(np.int64)
    print("each warpgroup from its own stamp 0 of the pair (unset stamps: large numbers):")
    for pair in range(8):
        w0 = " ".join(f"{int(x - t[0, pair, 0]):6d}" for x in t[0, pair])
        w1 = " ".join(f"{int(x - t[1, pair, 0]):6d}" for x in t[1, pair])
        print(f"pair {pair}: WG0 {w0} | WG1 {w1}")
    # Thread 0 of warps 0, 4 and 8 (the producer) read one clock; but ptxas may move a clock read
    # across a barrier wait (session 8: seesaw64's WG0 stamp 4 came before WG1 posted P_B).
    print("all from WG0's stamp 0 of the pair (unset: '.'):")
    for pair in range(8):
        t0 = t[0, pair, 0]
        row = [" ".join(f"{int(x - t0):6d}" if abs(int(x - t0)) < 10**6 else "     ." for x in t[w, pair]) for w in (0, 1)]
        print(f"pair {pair}: WG0 {row[0]} | WG1 {row[1]}")
    period = np.diff(t[0, :, 0])
    print(f"pair period (clocks): {period.tolist()}; median {int(np.median(period))}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))

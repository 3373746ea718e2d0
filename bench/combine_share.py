"""How much of a call is the combine? Times back-to-back calls (direct launches, no graphs) of
one benchmark row three ways: as the library makes them; with the combine launched but given a
num_splits of zeros (every CTA returns at once: what a combine with nothing to merge costs); and
with no combine launch. The last two leave split sequences unmerged: timing only.

    python3 bench/combine_share.py [B=128 S_Q=1 H_Q=128 S_K=4096 VARLEN=1]   (GPU, repo root)
"""

import sys

import cupy as cp
import ml_dtypes
import numpy as np

import cupymla
from cupymla import api
from cupymla.benchmark import Gpu
from tests.gpu_cases import make_inputs, seqlens_for


def main(b=128, s_q=1, h_q=128, s_k=4096, varlen=1, calls=40, rounds=3):
    api._REPLAY = False
    rng = np.random.default_rng(0)
    lens = seqlens_for(rng, b, s_k, s_q, varlen=bool(varlen))
    inp = make_inputs(rng, b, s_q, h_q, 1, lens, 64, np.dtype(ml_dtypes.bfloat16), garbage=False)
    meta, splits = cupymla.get_mla_metadata(inp["cache_seqlens"], s_q * h_q, 1)

    def call():
        cupymla.flash_mla_with_kvcache(inp["q"], inp["k_cache"], inp["block_table"], inp["cache_seqlens"],
                                       512, meta, splits, causal=s_q > 1)
    call()
    plan = next(iter(api._PLANS.values()))
    combine = plan.combine
    real = combine.run
    zeros = cp.zeros(b + 1, cp.int32)

    def empty(stream, ptrs, os_):
        real(stream, (ptrs[0], ptrs[1], zeros.data.ptr, ptrs[3], ptrs[4]), os_)

    modes = {"as made": real, "empty combine": empty, "no combine": lambda *a: None}
    res = {m: [] for m in modes}
    gpu = Gpu(cp, calls, 3, 1.0)
    cp.cuda.Device().synchronize()   # the inputs were made on the legacy stream
    for _ in range(rounds):
        for m, fn in modes.items():
            combine.run = fn
            res[m].append(gpu.back_to_back(lambda i: call(), n=calls))   # no L2 flush
    combine.run = real
    pieces = np.diff(splits.get())
    print(f"b{b} s_q{s_q} h_q{h_q} s_k{s_k}: split sequences {(pieces > 1).sum()}/{b}, pieces max {pieces.max()}; "
          + ", ".join(f"{m} {min(v):.1f} us" for m, v in res.items()))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))

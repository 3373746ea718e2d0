"""Decode calls of one benchmark configuration, for `ncu` (run on a GPU machine):

    ncu --clock-control none -k regex:mla_decode --launch-skip 3 --launch-count 1 --set full \\
        python3 bench/profile_one.py 128 1 128 4096
    python3 bench/profile_one.py B S_Q H_Q S_K [VARLEN=1] [CAUSAL=s_q>1] [LENS=l0,l1,...]

Five calls (each runs the decode kernel, then the combine kernel), after one metadata call.
"""

import sys

import cupy as cp
import ml_dtypes
import numpy as np

import cupymla
from tests.gpu_cases import make_inputs, seqlens_for


def main(b=128, s_q=1, h_q=128, s_k=4096, varlen=1, causal=None, lens=None):
    rng = np.random.default_rng(0)
    causal = s_q > 1 if causal is None else bool(causal)
    if lens is None:
        lens = seqlens_for(rng, b, s_k, s_q, varlen=bool(varlen))
    inp = make_inputs(rng, b, s_q, h_q, 1, lens, 64, np.dtype(ml_dtypes.bfloat16), garbage=False)
    meta, splits = cupymla.get_mla_metadata(inp["cache_seqlens"], s_q * h_q, 1)
    for _ in range(5):
        cupymla.flash_mla_with_kvcache(inp["q"], inp["k_cache"], inp["block_table"], inp["cache_seqlens"],
                                       512, meta, splits, causal=causal)
    cp.cuda.Device().synchronize()


if __name__ == "__main__":
    args = sys.argv[1:]
    lens = np.array([int(x) for x in args[6].split(",")], dtype=np.int32) if len(args) > 6 else None
    main(*(int(a) for a in args[:6]), lens=lens)

"""One decode call of a benchmark configuration, for `ncu` (run on a GPU machine):

    ncu --clock-control none -k regex:mla_decode --launch-skip 3 --launch-count 1 --set full \\
        python3 bench/profile_one.py 128 1 128 4096
"""

import sys

import cupy as cp
import ml_dtypes
import numpy as np

import cupymla
from tests.gpu_cases import make_inputs, seqlens_for


def main(b=128, s_q=1, h_q=128, s_k=4096):
    rng = np.random.default_rng(0)
    lens = seqlens_for(rng, b, s_k, s_q, varlen=True)
    inp = make_inputs(rng, b, s_q, h_q, 1, lens, 64, np.dtype(ml_dtypes.bfloat16), garbage=False)
    meta, splits = cupymla.get_mla_metadata(inp["cache_seqlens"], s_q * h_q, 1)
    for _ in range(5):
        cupymla.flash_mla_with_kvcache(inp["q"], inp["k_cache"], inp["block_table"], inp["cache_seqlens"],
                                       512, meta, splits, causal=s_q > 1)
    cp.cuda.Device().synchronize()


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))

"""Where the host time of one decode call goes: cProfile over many calls (run on a GPU machine).

    PYTHONPATH=. python3 bench/host_overhead.py
"""

import cProfile
import pstats
import time

import cupy as cp
import ml_dtypes
import numpy as np

import cupymla
from tests.gpu_cases import make_inputs, seqlens_for


def main(n=300, b=32, s_k=1024):
    rng = np.random.default_rng(0)
    lens = seqlens_for(rng, b, s_k, 1, True)
    inp = make_inputs(rng, b, 1, 128, 1, lens, 64, np.dtype(ml_dtypes.bfloat16), garbage=False)
    meta, splits = cupymla.get_mla_metadata(inp["cache_seqlens"], 128, 1)
    args = (inp["q"], inp["k_cache"], inp["block_table"], inp["cache_seqlens"], 512, meta, splits)
    for _ in range(20):
        cupymla.flash_mla_with_kvcache(*args)
    cp.cuda.Device().synchronize()
    t = time.perf_counter()
    for _ in range(n):
        cupymla.flash_mla_with_kvcache(*args)
    per_call = (time.perf_counter() - t) / n * 1e6
    cp.cuda.Device().synchronize()
    print(f"host time per call: {per_call:.1f} us")
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        cupymla.flash_mla_with_kvcache(*args)
    prof.disable()
    cp.cuda.Device().synchronize()
    pstats.Stats(prof).sort_stats("tottime").print_stats(18)
    try:
        import torch
    except ImportError:
        return
    t = {k: torch.from_dlpack(v) for k, v in inp.items()}
    tmeta, tsplits = cupymla.get_mla_metadata(t["cache_seqlens"], 128, 1)
    targs = (t["q"], t["k_cache"], t["block_table"], t["cache_seqlens"], 512, tmeta, tsplits)
    for _ in range(20):
        cupymla.flash_mla_with_kvcache(*targs)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n):
        cupymla.flash_mla_with_kvcache(*targs)
    print(f"host time per call, torch tensors: {(time.perf_counter() - start) / n * 1e6:.1f} us")
    torch.cuda.synchronize()


if __name__ == "__main__":
    # b = 32, L ~ 1024 as in earlier runs; then b = 2, L ~ 256, whose GPU time per call is short
    # enough that a queue of launches never holds the host back.
    main()
    print("--- b = 2, L ~ 256")
    main(n=2000, b=2, s_k=256)

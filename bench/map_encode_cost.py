"""Host cost of a tensor map: one cuTensorMapEncodeTiled through cuda-bindings (a cache miss of
tma.k_cache_map, paid when a call brings a k_cache pointer not seen before; q's map holds no
pointer and is made once per layout, which is why) against a cache hit of tma.q_map. Run on a
GPU machine: python3 bench/map_encode_cost.py"""

import os
import sys
import time

import cupy as cp
import ml_dtypes
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from cupymla import tma  # noqa: E402


def per_call_us(fn, n=2000):
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def main():
    q = cp.zeros((128, 1, 128, 576), dtype=np.dtype(ml_dtypes.bfloat16))
    dims, strides, box = [576, 128, 1, 1, 128], [1152, 147456, 147456, 147456], [64, 64, 1, 1, 1]
    assert tma._encode_tiled(q, dims, strides, box) is not None, "the driver refused the q map"
    print(f"q map encode (miss): {per_call_us(lambda: tma._encode_tiled(q, dims, strides, box)):.2f} us")
    print(f"q map cached (hit):  {per_call_us(lambda: tma.q_map(q, 1)):.2f} us")


if __name__ == "__main__":
    main()

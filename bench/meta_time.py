"""get_mla_metadata's kernel, for ncu (GPU machine, repo root):

    ncu -k regex:mla_metadata --metrics gpu__time_duration.sum python3 bench/meta_time.py [B=128 ROWS=128]

Three calls on B random lengths (1 .. 8191), ROWS query rows per kv head, one kv head.
"""
import sys

import cupy as cp
import numpy as np

import cupymla

b, rows = (int(a) for a in (sys.argv[1:] + ["128", "128"])[:2])
sl = cp.asarray(np.random.default_rng(0).integers(1, 8192, b), cp.int32)
for _ in range(3):
    cupymla.get_mla_metadata(sl, rows, 1)
cp.cuda.Device().synchronize()

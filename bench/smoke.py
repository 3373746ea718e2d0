"""Device smoke run: first-call compile time, cache-load time in a new process, a few checks.

    PYTHONPATH=. python3 bench/smoke.py
"""

import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def main():
    cache = tempfile.mkdtemp(prefix="cupymla-cache-")
    os.environ["CUPYMLA_CACHE_DIR"] = cache
    import cupy as cp
    import ml_dtypes

    import cupymla
    from cupymla import kernels
    from tests.gpu_cases import check_against_reference, make_inputs, seqlens_for

    dev = kernels.device_info(0)
    print(f"device: {dev}")
    rng = np.random.default_rng(0)
    for (b, s_q, h_q, s_k, causal) in [(4, 1, 16, 1000, False), (4, 2, 128, 1000, True), (2, 1, 32, 300, False)]:
        lens = seqlens_for(rng, b, s_k, s_q, True)
        inp = make_inputs(rng, b, s_q, h_q, 1, lens, 64, np.dtype(ml_dtypes.bfloat16))
        t0 = time.perf_counter()
        meta, splits = cupymla.get_mla_metadata(inp["cache_seqlens"], s_q * h_q, 1)
        out, lse = cupymla.flash_mla_with_kvcache(inp["q"], inp["k_cache"], inp["block_table"], inp["cache_seqlens"],
                                                 512, meta, splits, causal=causal)
        cp.cuda.Device().synchronize()
        first = time.perf_counter() - t0
        err = check_against_reference(inp, out, lse, causal)
        print(f"b={b} s_q={s_q} h_q={h_q} s_k={s_k} causal={causal}: first call {first:.2f}s (compiles), max err {err:.2e}")

    # A new process with a warm disk cache: how long until the kernels are loaded?
    code = ("import time; t=time.perf_counter(); from cupymla import kernels; "
            "kernels.get_function(0, 'metadata.cu'); "
            "cfg = kernels.decode_config(16, kernels.device_info(0)['cc']); "
            "kernels.get_function(0, cfg.file, {'MLA_FP16': 0, **cfg.defines()}, cfg.smem_bytes); "
            "kernels.get_function(0, 'combine.cu', {'MLA_FP16': 0}); "
            "print(f'{(time.perf_counter()-t)*1e3:.1f}')")
    ms = subprocess.run([sys.executable, "-c", "import cupy; cupy.cuda.Device(0).use(); " + code],
                        capture_output=True, text=True, env=dict(os.environ))
    print(f"new process, warm cache: 3 kernels loaded in {ms.stdout.strip()} ms (after cupy import) {ms.stderr[-500:]}")


if __name__ == "__main__":
    main()

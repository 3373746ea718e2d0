"""``python -m cupymla check``: a quick end-to-end correctness check of this install.

On a GPU it runs the decode for a few shapes (few and many heads, causal, fp16, page sizes,
zero lengths) and compares each with the NumPy oracle at FlashMLA's tolerances. Without a GPU
it says so and checks the oracle and the scheduler twin on the CPU instead.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

CASES = [  # b, s_q, h_q, h_kv, seqlens, page_size, dtype, causal
    (3, 1, 16, 1, [700, 0, 130], 64, "bf16", False),
    (2, 2, 128, 1, [1500, 300], 64, "bf16", True),
    (2, 4, 32, 2, [900, 5], 16, "fp16", True),
    (4, 1, 64, 1, [64, 65, 1, 2000], 256, "bf16", False),
    (2, 1, 16, 1, [33, 400], 1, "fp16", False),
    (12, 1, 32, 1, [300, 5, 800, 64, 1, 0, 129, 1000, 77, 640, 256, 2], 32, "bf16", False),  # narrow combine
    (3, 2, 16, 1, [1000, 2, 64], 64, "fp16", True),   # 32 rows, causal: Hopper's narrow kernel
]


def _gpu_reason():
    try:
        import cupy
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # noqa: BLE001 - any failure means no usable GPU
        return f"no CUDA GPU visible ({type(exc).__name__}: {exc})"
    return None if n else "no CUDA GPU visible (0 devices)"


def _cpu_check() -> int:
    from . import reference, scheduler
    rng = np.random.default_rng(0)
    inp = reference.random_inputs(rng, 3, 2, 16, 1, [300, 0, 77], 16)
    out, lse = reference.flash_mla_with_kvcache(inp["q"], inp["k_cache"], inp["block_table"],
                                                inp["cache_seqlens"], 512, causal=True)
    ok = np.isfinite(out).all() and np.isposinf(lse[1]).all()
    meta, splits = scheduler.schedule([5000, 0, 17, 9000], 132)
    pieces = scheduler.pieces(meta, splits, [5000, 0, 17, 9000])
    covered = sum(e - s for _, _, _, s, e in pieces) == 5000 + 17 + 9000
    print(f"CPU: reference {'ok' if ok else 'FAILED'}, scheduler {'ok' if covered else 'FAILED'}")
    return 0 if ok and covered else 1


def _gpu_check() -> int:
    import cupy as cp
    import ml_dtypes

    import cupymla
    from . import api, kernels, reference
    dtypes = {"bf16": np.dtype(ml_dtypes.bfloat16), "fp16": np.dtype(np.float16)}
    info = kernels.device_info(cp.cuda.Device().id)
    print(f"GPU {cp.cuda.Device().id}: {info['name']}, compute capability {info['cc']}, {info['sms']} SMs")
    rng = np.random.default_rng(0)
    failures = 0
    for b, s_q, h_q, h_kv, lens, page, dt, causal in CASES:
        inp = reference.random_inputs(rng, b, s_q, h_q, h_kv, lens, page, dtype=dtypes[dt])
        dev = {k: cp.asarray(v) for k, v in inp.items()}
        meta, splits = cupymla.get_mla_metadata(dev["cache_seqlens"], s_q * h_q // h_kv, h_kv)
        out, lse = cupymla.flash_mla_with_kvcache(dev["q"], dev["k_cache"], dev["block_table"],
                                                 dev["cache_seqlens"], 512, meta, splits, causal=causal)
        ref_out, ref_lse = reference.flash_mla_with_kvcache(inp["q"], inp["k_cache"], inp["block_table"],
                                                            inp["cache_seqlens"], 512, causal=causal)
        got = out.get().astype(np.float32)
        err = np.abs(got - ref_out)
        ok = bool(np.isfinite(got).all() and (err <= 8e-4 + 2.01 / 128 * np.abs(ref_out)).all()
                  and (np.isinf(lse.get()) == np.isinf(ref_lse)).all())
        failures += not ok
        file = api.launched_file(kernels.decode_config(s_q * h_q // h_kv, info["cc"]), page)
        print(f"  b={b} s_q={s_q} h_q={h_q} h_kv={h_kv} page={page} {dt} causal={causal} "
              f"[{file}]: max err {err.max():.2e} {'ok' if ok else 'FAILED'}")
    print("all ok" if not failures else f"{failures} case(s) FAILED")
    return 1 if failures else 0


def main(argv=None) -> int:
    argparse.ArgumentParser(prog="python -m cupymla check", description=__doc__).parse_args(argv)
    reason = _gpu_reason()
    if reason:
        print(f"{reason}: no kernels were run; checking the CPU parts instead.")
        return _cpu_check()
    return _gpu_check()


if __name__ == "__main__":
    sys.exit(main())

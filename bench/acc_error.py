"""Output error of split sequences against the float64 NumPy oracle, for comparing builds that
store the partial results differently (MLA_ACC16: 16-bit partials, bench/NOTES.md session 11).

    python3 bench/acc_error.py            (GPU machine, repo root; set CUPYMLA_DEFINES for a variant)

Cases where every sequence is split over several parts (few long sequences, many heads); prints
per case the number of split sequences, the max abs error of out, the max and 99.9th percentile
of |err| / (|ref| + 1e-2), and how many elements fail the test suite's tolerance.
"""

import cupy as cp
import ml_dtypes
import numpy as np

import cupymla
from cupymla import reference
from tests.gpu_cases import OUT_ATOL, OUT_RTOL, make_inputs, seqlens_for

CASES = [  # b, s_q, h_q, s_k, causal, dtype
    (8, 1, 128, 6000, False, "bf16"), (8, 1, 128, 6000, False, "fp16"),
    (24, 1, 64, 3000, False, "bf16"), (16, 2, 128, 2500, True, "bf16"),
    (6, 1, 16, 12000, False, "bf16"), (4, 1, 32, 9000, False, "fp16"),
]


def main():
    print(f"{'case':34s} {'split':>5s} {'max abs':>9s} {'max rel':>9s} {'p99.9 rel':>9s} {'fail':>5s}")
    for b, s_q, h_q, s_k, causal, dt in CASES:
        dtype = np.dtype(ml_dtypes.bfloat16) if dt == "bf16" else np.dtype(np.float16)
        rng = np.random.default_rng(b * 100 + h_q)
        lens = seqlens_for(rng, b, s_k, s_q, varlen=True)
        inp = make_inputs(rng, b, s_q, h_q, 1, lens, 64, dtype, garbage=False)
        meta, splits = cupymla.get_mla_metadata(inp["cache_seqlens"], s_q * h_q, 1)
        out, lse = cupymla.flash_mla_with_kvcache(inp["q"], inp["k_cache"], inp["block_table"],
                                                  inp["cache_seqlens"], 512, meta, splits, causal=causal)
        ref, _ = reference.flash_mla_with_kvcache(cp.asnumpy(inp["q"]), cp.asnumpy(inp["k_cache"]),
                                                  cp.asnumpy(inp["block_table"]), cp.asnumpy(inp["cache_seqlens"]),
                                                  512, causal=causal, compute_dtype=np.float64)
        got = cp.asnumpy(out).astype(np.float64)
        err = np.abs(got - ref)
        rel = err / (np.abs(ref) + 1e-2)
        fail = int((err > OUT_ATOL + OUT_RTOL * np.abs(ref)).sum())
        n_split = int((np.diff(cp.asnumpy(splits)) > 1).sum())
        name = f"b{b} sq{s_q} h{h_q} sk{s_k}{' causal' if causal else ''} {dt}"
        print(f"{name:34s} {n_split:5d} {err.max():9.2e} {rel.max():9.2e} {np.quantile(rel, 0.999):9.2e} {fail:5d}")


if __name__ == "__main__":
    main()

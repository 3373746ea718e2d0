"""Where a call's fixed time goes: whole call against the decode alone, over shapes with the
same number of keys (run on a GPU machine; replay cache off so each call launches directly).

    python3 bench/fixed_cost.py [--fixed-overhead 5,2,...] [--rows NAME,...] [--out FILE]

Rows (s_q 1, bf16, pages of 64; h_q 128 unless named): equal-length batches of 66 x 8K,
132 x 4K, 264 x 2K (one, two, four sequences a part and no split), the benchmark's varlen
shapes (normal(s_k, s_k / 2) lengths), and a few h_q 16 / 32 rows (see ROWS).
"decode" is the same call with the combine launch skipped (its output is then not final). For
rows without split sequences it came out 2-16 us above the whole call in every session-7 run
(unexplained): read it only for rows with splits, and compare whole calls.
Each schedule is the NumPy scheduler's (cupymla/scheduler.py) with the given FIXED_OVERHEAD,
passed as the classic (metadata, num_splits) pair; every row is checked against the NumPy
reference on 3 sequences before it is timed.
"""

import argparse
import os
import sys
import types

os.environ.setdefault("CUPYMLA_REPLAY", "0")

import cupy as cp  # noqa: E402
import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import cupymla  # noqa: E402
from cupymla import api, benchmark, scheduler  # noqa: E402
from tests.gpu_cases import check_against_reference, make_inputs, seqlens_for  # noqa: E402

ROWS = {
    "66x8K": (66, 1, 128, 8192, False),
    "132x4K": (132, 1, 128, 4096, False),
    "264x2K": (264, 1, 128, 2048, False),
    "128x4K-var": (128, 1, 128, 4096, True),
    "128x8K-var": (128, 1, 128, 8192, True),
    "128x1K-var": (128, 1, 128, 1024, True),
    "32x1K-var": (32, 1, 128, 1024, True),
    "8x32K": (8, 1, 128, 32768, False),
    "1x64K-h16": (1, 1, 16, 65536, False),
    "128x4K-h16-var": (128, 1, 16, 4096, True),
    "128x8K-h16-var": (128, 1, 16, 8192, True),
    "64x8K-h32": (64, 1, 32, 8192, False),
}


def schedule_for(lens, num_parts, fixed):
    meta, splits = scheduler.schedule(lens, num_parts, fixed_overhead=fixed)
    split_seqs = int((np.diff(splits) > 1).sum())
    return cp.asarray(meta), cp.asarray(splits), split_seqs, int(splits[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixed-overhead", default="5")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--out", default=None)
    ap.add_argument("--dim", type=int, default=576, help="q/k head dim (576, or 512 without rope)")
    ap.add_argument("--no-check", action="store_true", help="skip the reference check (debug builds)")
    args = ap.parse_args()
    gpu = benchmark.Gpu(cp, iters=200, warmup=3, budget=1.0)
    rng = np.random.default_rng(1)
    lines = []
    header = f"{'row':12s} {'FO':>3s} {'splitseq':>8s} {'pieces':>6s} {'call us':>8s} {'decode us':>9s} " \
             f"{'combine+':>8s} {'TF/s':>6s} {'decode TF/s':>11s} {'KV GB/s':>7s}"
    print(header, flush=True)
    for name in args.rows.split(","):
        b, s_q, h_q, s_k, varlen = ROWS[name]
        lens = seqlens_for(rng, b, s_k, s_q, varlen)
        inp = make_inputs(rng, b, s_q, h_q, 1, lens, 64, np.dtype(ml_dtypes.bfloat16), garbage=False, d=args.dim)
        flops = 2.0 * s_q * h_q * float(lens.sum()) * (args.dim + 512)
        kv_bytes = 2.0 * args.dim * float(lens.sum())
        num_parts = scheduler.num_parts_for(gpu.sms, s_q * h_q, 1)
        api._PLANS.clear()   # so that the row's plan is the only one
        for fo in (int(x) for x in args.fixed_overhead.split(",")):
            meta, splits, split_seqs, pieces = schedule_for(lens, num_parts, fo)
            # Inputs and schedule were written on the legacy stream, which the benchmark's
            # non-blocking stream does not wait for.
            cp.cuda.Device().synchronize()

            def call(i, inp=inp, meta=meta, splits=splits):
                return cupymla.flash_mla_with_kvcache(inp["q"], inp["k_cache"], inp["block_table"],
                                                      inp["cache_seqlens"], 512, meta, splits,
                                                      causal=False)
            with gpu.stream:
                out, lse = call(0)
                gpu.stream.synchronize()
                pick = list(np.random.default_rng(0).choice(b, min(b, 3), replace=False))
                if not args.no_check:
                    check_against_reference(inp, out, lse, False, batches=pick)
                plan, = api._PLANS.values()
            us, _ = gpu.per_call(call, flush=True)
            combine = plan.combine
            plan.combine = types.SimpleNamespace(run=lambda *a: None)
            try:
                dus, _ = gpu.per_call(call, flush=True)
            finally:
                plan.combine = combine
            line = (f"{name:12s} {fo:3d} {split_seqs:8d} {pieces:6d} {us:8.1f} {dus:9.1f} {us - dus:8.1f} "
                    f"{flops / us / 1e6:6.0f} {flops / dus / 1e6:11.0f} {kv_bytes / us / 1e3:7.0f}")
            print(line, flush=True)
            lines.append(line)
        inp = None   # free the row's arrays before the next row
        gpu.free()
    if args.out:
        with open(args.out, "w") as f:
            f.write(header + "\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""Whole-call time against the number of scheduler parts actually used (the rest of the
schedule's rows left empty), for small batches where splits and the combine may cost more than
the SMs they keep busy. Run on a GPU machine:

    python3 bench/parts_sweep.py [--rows 32x1K-var,8x32K] [--parts 66,48,40,32]

Rows as in bench/fixed_cost.py; each schedule is checked against the NumPy reference on 3
sequences before it is timed (replay cache off)."""

import argparse
import os
import sys

os.environ.setdefault("CUPYMLA_REPLAY", "0")

import cupy as cp  # noqa: E402
import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import cupymla  # noqa: E402
from cupymla import api, benchmark, scheduler  # noqa: E402
from bench.fixed_cost import ROWS  # noqa: E402
from tests.gpu_cases import check_against_reference, make_inputs, seqlens_for  # noqa: E402


def padded_schedule(lens, used, num_parts):
    """scheduler.schedule over `used` parts, padded with empty parts (begin after end) to the
    num_parts rows the plan expects."""
    meta, splits = scheduler.schedule(lens, used)
    pad = np.zeros((num_parts - used, meta.shape[1]), dtype=np.int32)
    pad[:, 0], pad[:, 2] = len(lens), len(lens) - 1
    return cp.asarray(np.concatenate([meta, pad])), cp.asarray(splits), int((np.diff(splits) > 1).sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="32x1K-var,8x32K")
    ap.add_argument("--parts", default="66,48,40,32")
    args = ap.parse_args()
    gpu = benchmark.Gpu(cp, iters=200, warmup=3, budget=1.0)
    rng = np.random.default_rng(1)
    print(f"{'row':12s} {'parts':>5s} {'splitseq':>8s} {'call us':>8s}", flush=True)
    for name in args.rows.split(","):
        b, s_q, h_q, s_k, varlen = ROWS[name]
        lens = seqlens_for(rng, b, s_k, s_q, varlen)
        inp = make_inputs(rng, b, s_q, h_q, 1, lens, 64, np.dtype(ml_dtypes.bfloat16), garbage=False)
        num_parts = scheduler.num_parts_for(gpu.sms, s_q * h_q, 1)
        api._PLANS.clear()
        for used in (int(x) for x in args.parts.split(",")):
            meta, splits, split_seqs = padded_schedule(lens, min(used, num_parts), num_parts)
            cp.cuda.Device().synchronize()

            def call(i, inp=inp, meta=meta, splits=splits):
                return cupymla.flash_mla_with_kvcache(inp["q"], inp["k_cache"], inp["block_table"],
                                                      inp["cache_seqlens"], 512, meta, splits, causal=False)
            with gpu.stream:
                out, lse = call(0)
                gpu.stream.synchronize()
                check_against_reference(inp, out, lse, False,
                                        batches=list(np.random.default_rng(0).choice(b, min(b, 3), replace=False)))
            us, _ = gpu.per_call(call, flush=True)
            print(f"{name:12s} {used:5d} {split_seqs:8d} {us:8.1f}", flush=True)


if __name__ == "__main__":
    main()

"""Where the narrow kernel's tile goes: thread 0's clocks in each phase of its tile loop
(MLA_PHASE_CLOCKS, common/clocks.cuh), averaged over the CTAs of one call.

    python3 bench/phase_probe.py [B=64 S_Q=1 H_Q=32 S_K=8192 VARLEN=0]   (Hopper GPU, repo root)

Extra knobs of the build come from CUPYMLA_DEFINES as usual (e.g. MLA_FAKE_KV_LOAD=1 to time the
math alone). Prints the whole call's µs (CUDA events, back to back and with the L2 flushed before each call),
then for the last flushed call each phase's clocks per tile (a CTA's sum over its tiles / its
tiles, median over CTAs) and its share of the tile loop, and a CTA's once-a-sequence clocks.
"""

import os
import sys

import cupy as cp
import numpy as np

from bench.clock_probe import instrumented_call
from cupymla import scheduler
from cupymla.benchmark import Gpu

PHASES = ["wait tile", "landed barrier", "scores", "max + barrier", "exp, P + barrier", "P.V",
          "release stage", "seq start (q)", "epilogue", "first tile wait"]


def main(b=64, s_q=1, h_q=32, s_k=8192, varlen=0):
    cfg, lens, meta, splits, call, module = instrumented_call(b, s_q, h_q, s_k, varlen, "MLA_PHASE_CLOCKS",
                                                              ("decode_sm90_narrow.cu",))
    gpu = Gpu(cp, 20, 3, 1.0)
    per_call = gpu.back_to_back(lambda i: call(), n=20)
    flushed = gpu.per_call(lambda i: call(), flush=True)[0]   # the phases read below are the last flushed call's
    mod = module()
    m_tiles = -(-s_q * h_q // cfg.block_m)
    ctas = int(meta.shape[0]) * m_tiles
    ph = cp.ndarray((1024, len(PHASES)), cp.uint64, mod.get_global("mla_phases")).get()[:ctas].astype(np.float64)
    tiles = np.zeros(int(meta.shape[0]))
    for part, _, _, t0, t1 in scheduler.pieces(meta.get(), splits.get(), lens):
        tiles[part] += -(-max(t1 - t0, 0) // 64)
    tiles = np.repeat(tiles, m_tiles)
    keep = tiles > 0
    per_tile = ph[keep] / tiles[keep, None]
    med = np.median(per_tile, axis=0)
    total = med[:7].sum()   # the tile loop's own phases
    print(f"b{b} s_q{s_q} h_q{h_q} s_k{s_k} {os.environ['CUPYMLA_DEFINES']}: {per_call:.1f} us a call back to back,"
          f" {flushed:.1f} us flushed (the phases are the last flushed call's),"
          f" tiles a CTA median {np.median(tiles[keep]):.0f}; clocks a tile (median over CTAs):")
    for name, v in zip(PHASES, med):
        print(f"  {name:22s} {v:8.0f}  {100 * v / total:5.1f}%")
    print(f"  {'tile loop total':22s} {total:8.0f}")
    once = ph[keep][:, 7:].sum(1)   # a CTA's sequence starts, epilogues and first wait, in total
    print(f"  a CTA's start + epilogues + first wait: median {np.median(once):.0f} clocks, max {once.max():.0f};"
          f" whole loop a CTA: median {np.median(ph[keep][:, :7].sum(1)):.0f}, max {ph[keep][:, :7].sum(1).max():.0f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))

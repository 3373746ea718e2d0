"""Is a slow call running at fewer clocks a second, or taking more clocks? How evenly do its CTAs end?

    python3 bench/clock_probe.py [B=128 S_Q=1 H_Q=128 S_K=16384 CALLS=30 VARLEN=1]   (Hopper GPU, repo root)

Builds the shape's Hopper kernel (decode_sm90_seesaw64.cu or decode_sm90_narrow.cu) with
MLA_CLOCKS=1 (common/clocks.cuh: each CTA's start and end by %globaltimer and clock64), makes
inputs (seeded; VARLEN=0: every length s_k), times CALLS back-to-back calls with CUDA events, and prints for the last
call: the kernel's span, each CTA's clocks a second, its clocks, the spread of CTA starts and
ends, a least-squares fit of each CTA's clocks to its part's tokens and pieces, and the fastest
and slowest CTAs. With $OUT set, the per-CTA numbers go to an .npz there. Run it in several
processes to compare a fast and a slow one (bench/NOTES.md, session 10).
"""

import os
import sys

import cupy as cp
import ml_dtypes
import numpy as np

import cupymla
from cupymla import kernels, scheduler
from cupymla.benchmark import Gpu
from tests.gpu_cases import make_inputs, seqlens_for

def instrumented_call(b, s_q, h_q, s_k, varlen, knob, files):
    """The shape's Hopper kernel built with the diagnostics `knob` (added to CUPYMLA_DEFINES; the
    kernel must be one of `files`), seeded bf16 inputs on pages of 64 (VARLEN 0: every length
    s_k) and their schedule. Returns (cfg, lens, meta, splits, call, module): call() runs one
    decode; module(), after a call, is the compiled module, whose globals the knob fills."""
    cfg = kernels.decode_config(s_q * h_q, (9, 0))
    if cfg.file not in files:
        raise SystemExit(f"{cfg.file} has no {knob} stamps")
    os.environ["CUPYMLA_DEFINES"] = ",".join(filter(None, [os.environ.get("CUPYMLA_DEFINES", ""),
                                                            f"{cfg.file}:{knob}=1"]))
    rng = np.random.default_rng(0)
    lens = seqlens_for(rng, b, s_k, s_q, varlen=bool(varlen))
    inp = make_inputs(rng, b, s_q, h_q, 1, lens, 64, np.dtype(ml_dtypes.bfloat16), garbage=False)
    meta, splits = cupymla.get_mla_metadata(inp["cache_seqlens"], s_q * h_q, 1)

    def call():
        return cupymla.flash_mla_with_kvcache(inp["q"], inp["k_cache"], inp["block_table"],
                                              inp["cache_seqlens"], 512, meta, splits, causal=s_q > 1)

    def module():
        return next(m for k, m in kernels._modules.items() if k[1] == cfg.file and dict(k[2]).get(knob) == "1")
    cp.cuda.Device().synchronize()   # the inputs were made on the legacy stream
    return cfg, lens, meta, splits, call, module


def main(b=128, s_q=1, h_q=128, s_k=16384, calls=30, varlen=1):
    cfg, lens, meta, splits, call, module = instrumented_call(
        b, s_q, h_q, s_k, varlen, "MLA_CLOCKS", ("decode_sm90_seesaw64.cu", "decode_sm90_narrow.cu"))
    tiles = -(-s_q * h_q // cfg.block_m)
    per_call = Gpu(cp, calls, 3, 1.0).back_to_back(lambda i: call(), n=calls)   # no L2 flush
    mod = module()
    ctas = int(meta.shape[0]) * tiles   # parts x m tiles (h_kv = 1)
    t = cp.ndarray((1024, 5), cp.uint64, mod.get_global("mla_clocks")).get()[:ctas].astype(np.int64)
    ns = t[:, 2] - t[:, 0]
    clk = t[:, 3] - t[:, 1]
    mhz = clk / ns * 1000
    span = (t[:, 2].max() - t[:, 0].min()) / 1000
    print(f"b{b} s_q{s_q} h_q{h_q} s_k{s_k}: {per_call:.1f} us a call; last kernel span {span:.1f} us;"
          f" CTA MHz median {np.median(mhz):.0f} (min {mhz.min():.0f}, max {mhz.max():.0f});"
          f" CTA kclocks median {np.median(clk)/1e3:.0f} max {clk.max()/1e3:.0f};"
          f" starts spread {(t[:, 0].max() - t[:, 0].min())/1000:.1f} us, ends spread"
          f" {(t[:, 2].max() - t[:, 2].min())/1000:.1f} us; SMs {len(set(t[:, 4].tolist()))}")
    # Each CTA's work as the scheduler dealt it: tokens and pieces of its part (cta = m tile + tiles * part).
    part_tokens = np.zeros(meta.shape[0]); part_pieces = np.zeros(meta.shape[0])
    for part, _, _, t0, t1 in scheduler.pieces(meta.get(), splits.get(), lens):
        part_tokens[part] += max(t1 - t0, 0)
        part_pieces[part] += 1
    tok = np.repeat(part_tokens, tiles); pcs = np.repeat(part_pieces, tiles); mt = np.tile(np.arange(tiles), meta.shape[0])
    # Least squares: clocks = a * tokens + c * pieces + d, per m tile.
    A = np.stack([tok, pcs, np.ones_like(tok)], 1)
    coef, *_ = np.linalg.lstsq(A, clk.astype(float), rcond=None)
    resid = clk - A @ coef
    print(f"  fit: {coef[0]:.1f} clocks a token, {coef[1]/1e3:.1f} k a piece, {coef[2]/1e3:.1f} k fixed;"
          f" residual rms {resid.std()/1e3:.1f} k, max {resid.max()/1e3:.1f} k, min {resid.min()/1e3:.1f} k;"
          f" m tile means (kclocks) {[round(clk[mt == i].mean() / 1e3) for i in range(tiles)]};"
          f" tokens a CTA min/median/max {tok.min():.0f}/{np.median(tok):.0f}/{tok.max():.0f}, pieces {pcs.min():.0f}-{pcs.max():.0f}")
    order = np.argsort(clk)
    for name, idx in (("fastest", order[:3]), ("slowest", order[-3:])):
        print(f"  {name}: " + "; ".join(f"part {i // tiles} m{i % tiles} sm{t[i, 4]} {tok[i]:.0f} tok {pcs[i]:.0f} pcs"
                                        f" {clk[i]/1e3:.0f} k end+{(t[i, 2] - t[:, 0].min())/1000:.0f} us" for i in idx))
    out = os.environ.get("OUT")
    if out:
        np.savez(os.path.join(out, f"clocks-b{b}-sq{s_q}-hq{h_q}-sk{s_k}-{os.getpid()}.npz"), t=t, tok=tok, pcs=pcs, lens=lens)

if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))

"""Random decode inputs made on the GPU, and the comparison with the NumPy oracle.

Inputs follow FlashMLA's tests: values randn/10 clamped to [-1, 1], a random permutation of
pages, and garbage where the contract says nothing may be read: NaN cache rows past each
sequence and huge page numbers in the block table past its last used page.
"""

from __future__ import annotations

import numpy as np

from cupymla import reference

# FlashMLA's tolerances against an fp32 reference (DESIGN.md, "Tests").
OUT_ATOL, OUT_RTOL = 8e-4, 2.01 / 128
LSE_RTOL = 8 / 65536


def seqlens_for(rng, b, s_k, s_q, varlen, zero_some=False):
    if varlen:
        lens = np.maximum(rng.normal(s_k, s_k / 2, size=b), s_q).astype(np.int32)
    else:
        lens = np.full(b, s_k, dtype=np.int32)
    if zero_some and b > 1:
        lens[rng.random(b) < 0.3] = 0
        lens[0] = 0
    return lens


def make_inputs(rng, b, s_q, h_q, h_kv, lens, page_size, dtype, d=576, garbage=True):
    import cupy as cp
    lens = np.asarray(lens, dtype=np.int32)
    pages_per_seq = np.maximum(-(-lens // page_size), 1)
    max_blocks = int(pages_per_seq.max()) + 1
    num_pages = int(pages_per_seq.sum()) + 2
    perm = rng.permutation(num_pages).astype(np.int32)
    bt = np.full((b, max_blocks), 2**30 if garbage else 0, dtype=np.int32)
    pos = 0
    for i in range(b):
        n = int(pages_per_seq[i])
        bt[i, :n] = perm[pos:pos + n]
        pos += n
    seed = int(rng.integers(2**31))
    crng = cp.random.default_rng(seed)
    q = cp.clip(crng.standard_normal((b, s_q, h_q, d), dtype=cp.float32) / 10, -1, 1).astype(dtype)
    k = cp.clip(crng.standard_normal((num_pages, page_size, h_kv, d), dtype=cp.float32) / 10, -1, 1).astype(dtype)
    if garbage:
        # Poison every cache row no sequence owns.
        owned = np.zeros((num_pages, page_size), dtype=bool)
        for i in range(b):
            L = int(lens[i])
            n = -(-L // page_size)
            if n:
                rows = np.arange(n * page_size) < L
                owned[bt[i, :n]] = rows.reshape(n, page_size)
        mask = cp.asarray(~owned)
        k[mask] = cp.asarray(np.array(np.nan, dtype=np.float32)).astype(dtype)
    return dict(q=q, k_cache=k, block_table=cp.asarray(bt), cache_seqlens=cp.asarray(lens))


def decode(inputs, s_q, h_q, h_kv, causal, **kw):
    """The decode of `inputs` through the public API, with a schedule made for it (lazy metadata)."""
    import cupymla
    meta, splits = cupymla.get_mla_metadata(inputs["cache_seqlens"], s_q * h_q // h_kv, h_kv)
    return cupymla.flash_mla_with_kvcache(inputs["q"], inputs["k_cache"], inputs["block_table"],
                                          inputs["cache_seqlens"], 512, meta, splits, causal=causal, **kw)


def check_against_reference(inputs, out, lse, causal, softmax_scale=None, batches=None):
    """Compare GPU results with the oracle, over `batches` (default: all) of the batch."""
    import cupy as cp
    b = inputs["q"].shape[0]
    idx = np.arange(b) if batches is None else np.asarray(batches)
    q = cp.asnumpy(inputs["q"][idx])
    bt = cp.asnumpy(inputs["block_table"][idx])
    lens = cp.asnumpy(inputs["cache_seqlens"][idx])
    k = cp.asnumpy(inputs["k_cache"])
    ref_out, ref_lse = reference.flash_mla_with_kvcache(q, k, bt, lens, 512, softmax_scale=softmax_scale,
                                                        causal=causal, compute_dtype=np.float32)
    got_out = cp.asnumpy(cp.asarray(out)[idx]).astype(np.float32)
    got_lse = cp.asnumpy(cp.asarray(lse)[idx])
    assert np.isfinite(got_out).all(), "out has NaN/inf"
    err = np.abs(got_out - ref_out)
    bad = err > OUT_ATOL + OUT_RTOL * np.abs(ref_out)
    assert not bad.any(), (f"out: {bad.sum()} of {bad.size} elements off, max abs err {err.max():.3g} "
                           f"at {np.unravel_index(err.argmax(), err.shape)}")
    inf_ref = np.isinf(ref_lse)
    assert (np.isinf(got_lse) == inf_ref).all() and (got_lse[inf_ref] == ref_lse[inf_ref]).all(), "lse: inf mismatch"
    # Relative, with a floor of 1 so that an lse near 0 (one key) is not held to 1e-9.
    lerr = np.abs(got_lse[~inf_ref] - ref_lse[~inf_ref]) / np.maximum(np.abs(ref_lse[~inf_ref]), 1.0)
    assert lerr.size == 0 or lerr.max() <= LSE_RTOL, f"lse: max rel err {lerr.max():.3g}"
    return float(err.max()) if err.size else 0.0

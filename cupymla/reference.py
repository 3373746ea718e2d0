"""NumPy reference implementation (the oracle) of paged MLA decode.

Every test checks the GPU kernels against this module, and it is usable on its own on a
machine with no GPU: it imports only ``numpy`` and ``ml_dtypes`` (for bf16), never cupy.

The math is the one FlashMLA's ``flash_mla_with_kvcache`` computes (see DESIGN.md,
"What MLA decode computes"):

* K is gathered from a paged cache through the block table; V is the first ``head_dim_v``
  columns of K (the same cache);
* query head ``h`` reads KV head ``h // (h_q // h_kv)``;
* with ``causal`` and ``s_q > 1`` query ``j`` (token ``L - s_q + j``) sees keys
  ``0 .. L - s_q + j``;
* ``lse`` is the natural-log logsumexp of the scaled scores; a query that sees no key gets
  ``out = 0`` and ``lse = +inf``.

Only the first ``ceil(L / page_size)`` block-table entries and the first ``L`` cache rows
of a sequence are ever read: whatever lies past them (NaN rows, out-of-range page numbers)
is garbage by contract.
"""

import ml_dtypes
import numpy as np

__all__ = [
    "flash_mla_with_kvcache",
    "attend",
    "combine",
    "gather_kv",
    "random_inputs",
]

_COMPUTE_DTYPES = (np.float32, np.float64)


def _check_compute_dtype(compute_dtype):
    dt = np.dtype(compute_dtype)
    if dt not in [np.dtype(t) for t in _COMPUTE_DTYPES]:
        raise TypeError(f"compute_dtype must be float32 or float64, got {dt}")
    return dt


def gather_kv(k_cache, block_table_row, seqlen):
    """Return the first ``seqlen`` tokens of one sequence, ``[L, h_kv, d]``.

    Only the block-table entries that hold those tokens are used as indices; they are
    checked to be real pages (NumPy would otherwise wrap a -1 silently).
    """
    num_blocks, page_size, h_kv, d = k_cache.shape
    L = int(seqlen)
    if L < 0:
        raise ValueError(f"seqlen must be >= 0, got {L}")
    n_pages = -(-L // page_size)
    if n_pages > len(block_table_row):
        raise ValueError(
            f"seqlen {L} needs {n_pages} pages of {page_size} tokens but the block table row "
            f"has only {len(block_table_row)} entries"
        )
    pages = np.asarray(block_table_row[:n_pages]).astype(np.int64)
    if n_pages and (pages.min() < 0 or pages.max() >= num_blocks):
        raise ValueError(
            f"block table entries for the first {L} tokens must be in [0, {num_blocks}), "
            f"got {pages.tolist()}"
        )
    kv = k_cache[pages].reshape(n_pages * page_size, h_kv, d)
    return kv[:L]


def attend(q, k, v, scale, visible=None, compute_dtype=np.float64):
    """Softmax attention of one sequence over a range of keys.

    q ``[n_q, h_q, d]``, k ``[L, h_kv, d]``, v ``[L, h_kv, dv]``; ``visible`` an optional
    bool mask ``[n_q, L]`` (True = query may see key). Returns ``o [n_q, h_q, dv]`` and
    ``lse [h_q, n_q]`` in ``compute_dtype``.

    A query with no visible key gets ``o = 0`` and ``lse = -inf``: that is the neutral
    element of :func:`combine`, so results over an empty key range merge correctly.
    (``flash_mla_with_kvcache`` turns a final -inf into FlashMLA's +inf.)
    """
    dt = _check_compute_dtype(compute_dtype)
    n_q, h_q, d = q.shape
    L, h_kv, dk = k.shape
    dv = v.shape[-1]
    if dk != d or v.shape[:2] != (L, h_kv):
        raise ValueError(f"shape mismatch: q {q.shape}, k {k.shape}, v {v.shape}")
    if h_q % h_kv:
        raise ValueError(f"h_q ({h_q}) must be a multiple of h_kv ({h_kv})")
    g = h_q // h_kv

    q = q.astype(dt)
    k = k.astype(dt)
    v = v.astype(dt)
    # Group query heads by the KV head they read: [h_kv, g * n_q, d], rows ordered (g, n_q),
    # so one batched matmul per KV head does all scores (BLAS, fast enough for the tests).
    qg = q.reshape(n_q, h_kv, g, d).transpose(1, 2, 0, 3).reshape(h_kv, g * n_q, d)
    s = np.matmul(qg, k.transpose(1, 2, 0)) * dt.type(scale)  # [h_kv, g*n_q, L]
    s = s.reshape(h_kv, g, n_q, L)
    if visible is not None:
        visible = np.asarray(visible, dtype=bool)
        if visible.shape != (n_q, L):
            raise ValueError(f"visible must have shape {(n_q, L)}, got {visible.shape}")
        s = np.where(visible, s, -np.inf)

    m = s.max(axis=-1, keepdims=True) if L else np.full((h_kv, g, n_q, 1), -np.inf, dt)
    # Subtract a finite max; for a fully masked row the max is -inf and every p is 0 anyway.
    m = np.where(np.isfinite(m), m, dt.type(0))
    p = np.exp(s - m)
    z = p.sum(axis=-1, keepdims=True)  # [h_kv, g, n_q, 1]
    o = np.matmul(p.reshape(h_kv, g * n_q, L), v.transpose(1, 0, 2))  # [h_kv, g*n_q, dv]
    o = o.reshape(h_kv, g, n_q, dv)
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = np.log(z) + m  # log(0) = -inf for rows with no visible key
        o = np.where(z > 0, o / z, dt.type(0))

    o = o.transpose(2, 0, 1, 3).reshape(n_q, h_q, dv)
    lse = lse[..., 0].reshape(h_q, n_q)
    return o, lse


def combine(os, lses):
    """Merge partial attention results computed over disjoint key ranges.

    ``os``: list of ``[n_q, h_q, dv]``; ``lses``: list of ``[h_q, n_q]`` (-inf for an empty
    range). Returns ``(o, lse)`` with ``lse = logsumexp_i lse_i`` and
    ``o = sum_i exp(lse_i - lse) * o_i``; all-empty gives ``o = 0``, ``lse = -inf``.
    """
    if len(os) == 0 or len(os) != len(lses):
        raise ValueError(f"need as many partial outputs as lses (>= 1), got {len(os)} and {len(lses)}")
    lses = np.stack([np.asarray(x) for x in lses])  # [P, h_q, n_q]
    os = np.stack([np.asarray(x) for x in os])  # [P, n_q, h_q, dv]
    m = lses.max(axis=0)
    m_safe = np.where(np.isfinite(m), m, 0)
    with np.errstate(divide="ignore"):
        lse = np.log(np.exp(lses - m_safe).sum(axis=0)) + m_safe
    finite = np.isfinite(lse)
    w = np.where(finite, np.exp(lses - np.where(finite, lse, 0)), 0)  # [P, h_q, n_q]
    o = (w.transpose(0, 2, 1)[..., None] * os).sum(axis=0)
    return o, lse


def flash_mla_with_kvcache(
    q,
    k_cache,
    block_table,
    cache_seqlens,
    head_dim_v,
    softmax_scale=None,
    causal=False,
    *,
    compute_dtype=np.float32,
    out_dtype=np.float32,
):
    """Paged MLA decode, FlashMLA's semantics, on NumPy arrays.

    q ``[b, s_q, h_q, d]``, k_cache ``[num_blocks, page_size, h_kv, d]``, block_table int
    ``[b, max_blocks]``, cache_seqlens int ``[b]``. Inputs may be bf16 (ml_dtypes),
    float16, float32 or float64; the math runs in ``compute_dtype``.
    Returns ``out [b, s_q, h_q, head_dim_v]`` (``out_dtype``) and ``lse [b, h_q, s_q]``
    (float32, +inf for a query that sees no key).
    """
    dt = _check_compute_dtype(compute_dtype)
    q = np.asarray(q)
    k_cache = np.asarray(k_cache)
    block_table = np.asarray(block_table)
    cache_seqlens = np.asarray(cache_seqlens)
    if q.ndim != 4:
        raise ValueError(f"q must be [b, s_q, h_q, d], got shape {q.shape}")
    if k_cache.ndim != 4:
        raise ValueError(f"k_cache must be [num_blocks, page_size, h_kv, d], got shape {k_cache.shape}")
    b, s_q, h_q, d = q.shape
    _, page_size, h_kv, dk = k_cache.shape
    if dk != d:
        raise ValueError(f"k_cache head dim {dk} must equal q head dim {d}")
    if not 0 < head_dim_v <= d:
        raise ValueError(f"head_dim_v must be in (0, {d}], got {head_dim_v}")
    if h_q % h_kv:
        raise ValueError(f"h_q ({h_q}) must be a multiple of h_kv ({h_kv})")
    if block_table.ndim != 2 or block_table.shape[0] != b:
        raise ValueError(f"block_table must be [{b}, max_blocks], got shape {block_table.shape}")
    if cache_seqlens.shape != (b,):
        raise ValueError(f"cache_seqlens must have shape ({b},), got {cache_seqlens.shape}")
    if softmax_scale is None:
        softmax_scale = d ** -0.5

    out = np.zeros((b, s_q, h_q, head_dim_v), dtype=out_dtype)
    lse = np.empty((b, h_q, s_q), dtype=np.float32)
    for i in range(b):
        L = int(cache_seqlens[i])
        kv = gather_kv(k_cache, block_table[i], L)
        visible = None
        if causal:
            # query j is token L - s_q + j and sees keys t <= L - s_q + j
            visible = np.arange(L)[None, :] <= (L - s_q + np.arange(s_q))[:, None]
        o, l = attend(q[i], kv, kv[..., :head_dim_v], softmax_scale, visible, dt)
        out[i] = o.astype(out_dtype)
        lse[i] = np.where(l == -np.inf, np.inf, l).astype(np.float32)
    return out, lse


def random_inputs(
    rng,
    b,
    s_q,
    h_q,
    h_kv,
    seqlens,
    page_size,
    d=576,
    dtype=ml_dtypes.bfloat16,
    garbage=True,
):
    """Random decode inputs built like FlashMLA's benchmark.

    q and the cache hold ``randn / 10`` clamped to [-1, 1], cast to ``dtype``; the block
    table maps each sequence to a random permutation of pages; the cache has a few extra
    pages nobody uses. ``seqlens`` is an int (same for all) or a sequence of ``b`` ints.
    With ``garbage=True`` everything a kernel must not read is poisoned: cache rows past
    each ``L`` (and unused pages) are NaN, and block-table entries past a sequence's last
    used page are ``2**30``.

    Returns a dict with ``q``, ``k_cache``, ``block_table`` (int32) and ``cache_seqlens``
    (int32).
    """
    rng = np.random.default_rng(rng)
    seqlens = np.broadcast_to(np.asarray(seqlens, dtype=np.int64), (b,)).copy()
    if (seqlens < 0).any():
        raise ValueError(f"seqlens must be >= 0, got {seqlens.tolist()}")
    max_blocks = max(1, max(-(-int(L) // page_size) for L in seqlens))
    extra = 3
    num_blocks = b * max_blocks + extra

    def randn(shape):
        return np.clip(rng.standard_normal(shape, dtype=np.float32) / 10, -1, 1).astype(dtype)

    q = randn((b, s_q, h_q, d))
    k_cache = randn((num_blocks, page_size, h_kv, d))
    block_table = rng.permutation(num_blocks)[: b * max_blocks].reshape(b, max_blocks)
    block_table = block_table.astype(np.int32)

    if garbage:
        used = np.zeros((num_blocks, page_size), dtype=bool)
        for i, L in enumerate(seqlens):
            L = int(L)
            n_pages = -(-L // page_size)
            for t in range(0, L, page_size):
                used[block_table[i, t // page_size], : min(page_size, L - t)] = True
            block_table[i, n_pages:] = 2**30
        k_cache[~used] = np.nan
    return {
        "q": q,
        "k_cache": k_cache,
        "block_table": block_table,
        "cache_seqlens": seqlens.astype(np.int32),
    }

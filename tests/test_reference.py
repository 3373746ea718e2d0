"""CPU tests of the NumPy oracle (cupymla.reference): no GPU needed.

The oracle is checked against a plain float64 loop written independently of it, and then
against the algebraic properties every correct attention implementation has.
"""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cupymla import reference as ref

DV = 512
PAGE_SIZES = [1, 16, 64, 256]
F64 = dict(compute_dtype=np.float64, out_dtype=np.float64)
PROP = settings(max_examples=30, deadline=None)


def loop_formula(q, k_cache, block_table, seqlens, head_dim_v, scale, causal):
    """Attention spelled out per sequence, head and query, in float64."""
    q = q.astype(np.float64)
    k_cache = k_cache.astype(np.float64)
    b, s_q, h_q, _ = q.shape
    page_size, h_kv = k_cache.shape[1], k_cache.shape[2]
    out = np.zeros((b, s_q, h_q, head_dim_v))
    lse = np.full((b, h_q, s_q), np.inf)
    for i in range(b):
        L = int(seqlens[i])
        for h in range(h_q):
            kvh = h // (h_q // h_kv)
            for j in range(s_q):
                last = L - s_q + j if causal else L - 1
                keys = [
                    k_cache[block_table[i, t // page_size], t % page_size, kvh]
                    for t in range(L)
                    if t <= last
                ]
                if not keys:
                    continue
                keys = np.array(keys)
                scores = keys @ q[i, j, h] * scale
                mx = scores.max()
                w = np.exp(scores - mx)
                lse[i, h, j] = mx + np.log(w.sum())
                out[i, j, h] = (w / w.sum()) @ keys[:, :head_dim_v]
    return out, lse


def run(inp, **kw):
    kw.setdefault("head_dim_v", DV)
    return ref.flash_mla_with_kvcache(
        inp["q"], inp["k_cache"], inp["block_table"], inp["cache_seqlens"], **kw
    )


def clean_copy(inp):
    """The same inputs with NaN garbage zeroed and garbage block-table entries set to 0."""
    k_cache = inp["k_cache"].copy()
    k_cache[np.isnan(k_cache.astype(np.float32))] = 0
    block_table = inp["block_table"].copy()
    block_table[block_table >= k_cache.shape[0]] = 0
    return dict(inp, k_cache=k_cache, block_table=block_table)


# ---------------------------------------------------------------- against the loop formula

CASES = [
    # b, s_q, h_q, h_kv, seqlens, page_size, d, causal
    (1, 1, 1, 1, [5], 1, 576, False),
    (2, 1, 4, 1, [33, 0], 16, 576, False),
    (3, 2, 6, 2, [40, 1, 0], 16, 512, True),
    (2, 3, 6, 3, [70, 2], 64, 576, True),
    (2, 3, 6, 3, [70, 2], 64, 576, False),
    (2, 4, 3, 1, [3, 300], 256, 512, True),
    (1, 4, 2, 2, [4], 1, 576, True),
    (3, 2, 4, 1, [0, 0, 0], 64, 576, True),
    (2, 1, 9, 3, [129, 64], 64, 512, False),
    (2, 2, 4, 2, [17, 256], 256, 576, False),
]


@pytest.mark.parametrize("b,s_q,h_q,h_kv,seqlens,page_size,d,causal", CASES)
def test_matches_loop_formula(b, s_q, h_q, h_kv, seqlens, page_size, d, causal):
    rng = np.random.default_rng(hash((b, s_q, h_q, h_kv, page_size, d, causal)) % 2**32)
    inp = ref.random_inputs(rng, b, s_q, h_q, h_kv, seqlens, page_size, d=d, dtype=np.float64)
    scale = 0.7 * d**-0.5
    out, lse = run(inp, softmax_scale=scale, causal=causal, **F64)
    want_out, want_lse = loop_formula(
        inp["q"], inp["k_cache"], inp["block_table"], inp["cache_seqlens"], DV, scale, causal
    )
    np.testing.assert_allclose(out, want_out, rtol=1e-10, atol=1e-13)
    assert lse.dtype == np.float32
    # lse is reported in float32, so compare it with float32 precision ...
    np.testing.assert_allclose(lse, want_lse.astype(np.float32), rtol=1e-6)
    # ... and the float64 lse of `attend` tightly.
    for i in range(b):
        L = int(inp["cache_seqlens"][i])
        kv = ref.gather_kv(inp["k_cache"], inp["block_table"][i], L)
        vis = np.arange(L)[None] <= (L - s_q + np.arange(s_q))[:, None] if causal else None
        _, l64 = ref.attend(inp["q"][i], kv, kv[..., :DV], scale, vis)
        np.testing.assert_allclose(np.where(l64 == -np.inf, np.inf, l64), want_lse[i], rtol=1e-10)


def test_default_scale_and_float32_compute():
    rng = np.random.default_rng(1)
    inp = ref.random_inputs(rng, 2, 2, 8, 1, [50, 130], 64, dtype=np.float64)
    out, lse = run(inp, causal=True, **F64)
    want_out, want_lse = loop_formula(
        inp["q"], inp["k_cache"], inp["block_table"], inp["cache_seqlens"], DV, 576**-0.5, True
    )
    np.testing.assert_allclose(out, want_out, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(lse, want_lse, rtol=1e-6)
    out32, lse32 = run(inp, causal=True)  # float32 math, float32 out by default
    assert out32.dtype == np.float32 and lse32.dtype == np.float32
    np.testing.assert_allclose(out32, want_out, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(lse32, want_lse, rtol=1e-6)


# ---------------------------------------------------------------- hypothesis properties


@st.composite
def cases(draw, max_s_q=3, max_len=200):
    h_kv = draw(st.sampled_from([1, 2, 3]))
    h_q = h_kv * draw(st.integers(1, 4))
    b = draw(st.integers(1, 3))
    s_q = draw(st.integers(1, max_s_q))
    seqlens = draw(st.lists(st.integers(0, max_len), min_size=b, max_size=b))
    page_size = draw(st.sampled_from(PAGE_SIZES))
    d = draw(st.sampled_from([576, 512]))
    causal = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    inp = ref.random_inputs(
        np.random.default_rng(seed), b, s_q, h_q, h_kv, seqlens, page_size, d=d, dtype=np.float64
    )
    return inp, causal


@PROP
@given(cases(), st.integers(-6, 6), st.floats(0.1, 10))
def test_scale_invariance(case, e, c):
    """q * c with softmax_scale / c gives the same result (exactly so for c a power of 2)."""
    inp, causal = case
    d = inp["q"].shape[-1]
    base = run(inp, causal=causal, **F64)
    for factor, exact in ((2.0**e, True), (c, False)):
        got = run(
            dict(inp, q=inp["q"] * factor),
            softmax_scale=d**-0.5 / factor,
            causal=causal,
            **F64,
        )
        for g, w in zip(got, base):
            if exact:
                np.testing.assert_array_equal(g, w)
            else:
                np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-14)


@PROP
@given(
    st.integers(1, 3),
    st.integers(0, 100),
    st.integers(1, 3),
    st.floats(-50, 50),
    st.integers(0, 2**32 - 1),
)
def test_shift_invariance(n_q, L, h_kv, shift, seed):
    """Adding a constant to every score leaves out unchanged and shifts lse by it.

    Done with one extra dimension: q gets a 1 there and every key gets `shift / scale`.
    """
    rng = np.random.default_rng(seed)
    d, dv, scale = 64, 32, 0.125
    q = rng.standard_normal((n_q, 2 * h_kv, d))
    k = rng.standard_normal((L, h_kv, d))
    v = rng.standard_normal((L, h_kv, dv))
    vis = rng.random((n_q, L)) < 0.7
    q1 = np.concatenate([q, np.ones((n_q, 2 * h_kv, 1))], axis=-1)
    k1 = np.concatenate([k, np.full((L, h_kv, 1), shift / scale)], axis=-1)
    o, lse = ref.attend(q, k, v, scale, vis)
    o1, lse1 = ref.attend(q1, k1, v, scale, vis)
    np.testing.assert_allclose(o1, o, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(lse1, lse + shift, rtol=1e-9, atol=1e-9)
    assert np.array_equal(np.isneginf(lse), ~vis.any(axis=1)[None].repeat(2 * h_kv, 0))


@PROP
@given(cases(), st.integers(0, 2**32 - 1))
def test_page_permutation_invariance(case, seed):
    inp, causal = case
    rng = np.random.default_rng(seed)
    num_blocks = inp["k_cache"].shape[0]
    perm = rng.permutation(num_blocks)
    k_cache = np.empty_like(inp["k_cache"])
    k_cache[perm] = inp["k_cache"]  # physical page p moves to perm[p]
    table = inp["block_table"].copy()
    real = table < num_blocks  # garbage entries stay garbage
    table[real] = perm[table[real]]
    got = run(dict(inp, k_cache=k_cache, block_table=table), causal=causal, **F64)
    for g, w in zip(got, run(inp, causal=causal, **F64)):
        np.testing.assert_array_equal(g, w)


@PROP
@given(
    st.integers(0, 150),
    st.integers(1, 3),
    st.integers(1, 3),
    st.booleans(),
    st.data(),
)
def test_split_combine_equals_unsplit(L, n_q, h_kv, causal, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    a = data.draw(st.integers(0, L))
    c = data.draw(st.integers(a, L))
    d, dv, scale = 576, 512, 576**-0.5
    h_q = 2 * h_kv
    q = rng.standard_normal((n_q, h_q, d)) / 10
    k = rng.standard_normal((L, h_kv, d)) / 10
    v = k[..., :dv]
    vis = np.arange(L)[None] <= (L - n_q + np.arange(n_q))[:, None] if causal else np.ones((n_q, L), bool)
    o, lse = ref.attend(q, k, v, scale, vis)
    parts = [ref.attend(q, k[lo:hi], v[lo:hi], scale, vis[:, lo:hi]) for lo, hi in ((0, a), (a, c), (c, L))]
    o2, lse2 = ref.combine([p[0] for p in parts], [p[1] for p in parts])
    np.testing.assert_allclose(o2, o, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(lse2, lse, rtol=1e-10)
    # combining with an empty partial changes nothing
    o3, lse3 = ref.combine([o, np.zeros_like(o)], [lse, np.full_like(lse, -np.inf)])
    np.testing.assert_allclose(o3, o, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(lse3, lse)


def test_combine_all_empty():
    o = np.zeros((2, 3, 4))
    lse = np.full((3, 2), -np.inf)
    got_o, got_lse = ref.combine([o, o], [lse, lse])
    np.testing.assert_array_equal(got_o, o)
    np.testing.assert_array_equal(got_lse, lse)


@PROP
@given(cases(max_s_q=4))
def test_causal_mask(case):
    """Causal query j == non-causal over the first L - s_q + j + 1 keys == s_q = 1 decode there."""
    inp, _ = case
    out, lse = run(inp, causal=True, **F64)
    s_q = inp["q"].shape[1]
    for j in range(s_q):
        lens = np.maximum(inp["cache_seqlens"] - s_q + j + 1, 0).astype(np.int32)
        one = dict(inp, q=inp["q"][:, j : j + 1], cache_seqlens=lens)
        o1, l1 = run(one, **F64)
        np.testing.assert_allclose(out[:, j : j + 1], o1, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(lse[:, :, j : j + 1], l1, rtol=1e-6)
        o2, l2 = run(dict(one, q=inp["q"][:, j : j + 1]), causal=True, **F64)
        np.testing.assert_array_equal(o2, o1)  # s_q = 1: causal changes nothing
        np.testing.assert_array_equal(l2, l1)
    if s_q > 1:
        # a non-causal run really does differ where the mask hides keys
        o_nc, _ = run(inp, causal=False, **F64)
        hidden = inp["cache_seqlens"] > 0
        if hidden.any():
            assert not np.allclose(o_nc[hidden, 0], out[hidden, 0])


@PROP
@given(cases())
def test_zero_length_rows(case):
    inp, causal = case
    lens = inp["cache_seqlens"].copy()
    lens[::2] = 0
    out, lse = run(dict(inp, cache_seqlens=lens), causal=causal, **F64)
    s_q = inp["q"].shape[1]
    for i, L in enumerate(lens):
        for j in range(s_q):
            sees = L - s_q + j + 1 > 0 if causal else L > 0
            if sees:
                assert np.isfinite(lse[i, :, j]).all()
            else:
                assert (out[i, j] == 0).all()
                assert (lse[i, :, j] == np.inf).all()


@PROP
@given(cases(), st.sampled_from([2**30, -1, 10**9]))
def test_garbage_never_leaks(case, bad_page):
    inp, causal = case
    table = inp["block_table"].copy()
    table[table >= inp["k_cache"].shape[0]] = bad_page
    dirty = dict(inp, block_table=table)
    assert np.isnan(inp["k_cache"]).any()  # the extra pages at least are poisoned
    out, lse = run(dirty, causal=causal, **F64)
    assert not np.isnan(out).any() and not np.isnan(lse).any()
    for g, w in zip((out, lse), run(clean_copy(inp), causal=causal, **F64)):
        np.testing.assert_array_equal(g, w)


def test_gather_kv_rejects_bad_pages_in_use():
    inp = ref.random_inputs(np.random.default_rng(0), 1, 1, 1, 1, [20], 16)
    table = inp["block_table"][0].copy()
    assert ref.gather_kv(inp["k_cache"], table, 20).shape == (20, 1, 576)
    table[1] = -1  # used by tokens 16..19: must not wrap around
    with pytest.raises(ValueError):
        ref.gather_kv(inp["k_cache"], table, 20)
    assert ref.gather_kv(inp["k_cache"], table, 16).shape == (16, 1, 576)


@settings(max_examples=15, deadline=None)
@given(cases(), st.sampled_from([ml_dtypes.bfloat16, np.float16, np.float32]))
def test_low_precision_inputs(case, dtype):
    """bf16/fp16 inputs are upcast exactly: same result as the float64 copy of them."""
    inp, causal = case
    low = dict(inp, q=inp["q"].astype(dtype), k_cache=inp["k_cache"].astype(dtype))
    up = dict(low, q=low["q"].astype(np.float64), k_cache=low["k_cache"].astype(np.float64))
    for compute in (np.float32, np.float64):
        out, lse = run(low, causal=causal, compute_dtype=compute, out_dtype=dtype)
        want_out, want_lse = run(up, causal=causal, compute_dtype=compute, out_dtype=np.float64)
        assert out.dtype == dtype and lse.dtype == np.float32
        np.testing.assert_array_equal(out, want_out.astype(dtype))
        np.testing.assert_array_equal(lse, want_lse)


@PROP
@given(cases())
def test_head_grouping(case):
    """Query heads of KV group g see only KV head g: run each group alone and compare."""
    inp, causal = case
    out, lse = run(inp, causal=causal, **F64)
    h_q, h_kv = inp["q"].shape[2], inp["k_cache"].shape[2]
    g = h_q // h_kv
    for kvh in range(h_kv):
        heads = slice(kvh * g, (kvh + 1) * g)
        alone = dict(inp, q=inp["q"][:, :, heads], k_cache=inp["k_cache"][:, :, kvh : kvh + 1])
        o1, l1 = run(alone, causal=causal, **F64)
        np.testing.assert_allclose(out[:, :, heads], o1, rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(lse[:, heads], l1)


# ---------------------------------------------------------------- inputs and errors


def test_random_inputs_layout():
    inp = ref.random_inputs(np.random.default_rng(3), 3, 2, 4, 1, [0, 17, 64], 16)
    q, kc, bt, sl = inp["q"], inp["k_cache"], inp["block_table"], inp["cache_seqlens"]
    assert q.dtype == ml_dtypes.bfloat16 and kc.dtype == ml_dtypes.bfloat16
    assert q.shape == (3, 2, 4, 576) and kc.shape[1:] == (16, 1, 576)
    assert bt.dtype == np.int32 and sl.dtype == np.int32 and bt.shape == (3, 4)
    assert sl.tolist() == [0, 17, 64]
    assert kc.shape[0] > bt.size  # spare pages
    assert (bt[0] == 2**30).all() and (bt[1, 2:] == 2**30).all() and (bt[2] < kc.shape[0]).all()
    used = [bt[1, 0], bt[1, 1], *bt[2]]
    assert len(set(used)) == len(used)
    assert not np.isnan(kc[bt[1, 1], :1].astype(np.float32)).any()
    assert np.isnan(kc[bt[1, 1], 1:].astype(np.float32)).all()
    vals = np.abs(np.nan_to_num(kc.astype(np.float32)))
    assert vals.max() <= 1 and 0.05 < vals[vals > 0].mean() < 0.15
    clean = ref.random_inputs(np.random.default_rng(3), 3, 2, 4, 1, [0, 17, 64], 16, garbage=False)
    assert not np.isnan(clean["k_cache"].astype(np.float32)).any()
    assert (clean["block_table"] < clean["k_cache"].shape[0]).all()


def test_bad_arguments():
    inp = ref.random_inputs(np.random.default_rng(0), 2, 1, 4, 2, [10, 20], 16)
    with pytest.raises(ValueError, match="h_q"):
        run(dict(inp, q=inp["q"][:, :, :3]))
    with pytest.raises(ValueError, match="head dim"):
        run(dict(inp, q=inp["q"][..., :512]))
    with pytest.raises(ValueError, match="cache_seqlens"):
        run(dict(inp, cache_seqlens=inp["cache_seqlens"][:1]))
    with pytest.raises(ValueError, match="pages"):
        run(dict(inp, cache_seqlens=np.array([10, 33], np.int32)))
    with pytest.raises(TypeError, match="compute_dtype"):
        run(inp, compute_dtype=np.float16)

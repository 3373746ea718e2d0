"""The decode kernels against the NumPy oracle on the GPU (skipped without one).

The grid is FlashMLA's (DESIGN.md, "Tests"). Its full product has thousands of cases, so a
fixed, seeded sample of it runs, alternating bf16 and fp16, plus dedicated tests for page
sizes, zero lengths, long sequences, large batches, both metadata conventions, out= buffers,
strided inputs and each framework.
"""

import itertools
import random

import numpy as np
import pytest

import cupymla
from cupymla import scheduler
from tests.gpu_cases import check_against_reference, decode, make_inputs, seqlens_for

pytestmark = pytest.mark.gpu

import ml_dtypes  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
FP16 = np.dtype(np.float16)

HEADS = [(1, 1), (3, 1), (3, 3), (9, 1), (9, 3), (63, 1), (63, 3), (64, 1), (64, 2), (64, 8),
         (126, 1), (126, 2), (126, 3), (128, 1), (128, 2), (128, 8)]
GRID = [c for c in itertools.product([1, 2, 6, 64], [1, 2, 4], [20, 140, 4096], HEADS, [False, True], [False, True])
        if not (c[1] == 1 and c[5])]   # causal changes nothing when s_q = 1
SAMPLE = random.Random(2025).sample(GRID, 240)


def subset(b, rng):
    """Sequences to compare with the oracle: all of a small batch, 8 of a large one."""
    return None if b <= 8 else np.sort(rng.choice(b, 8, replace=False))


@pytest.mark.parametrize("b,s_q,s_k,heads,varlen,causal", SAMPLE,
                         ids=[f"b{c[0]}-sq{c[1]}-sk{c[2]}-h{c[3][0]}x{c[3][1]}-{'var' if c[4] else 'fix'}-"
                              f"{'causal' if c[5] else 'full'}" for c in SAMPLE])
def test_grid(b, s_q, s_k, heads, varlen, causal):
    h_q, h_kv = heads
    seed = hash((b, s_q, s_k, heads, varlen, causal)) % 2**32
    rng = np.random.default_rng(seed)
    dtype = BF16 if seed % 2 else FP16
    lens = seqlens_for(rng, b, s_k, s_q, varlen)
    inputs = make_inputs(rng, b, s_q, h_q, h_kv, lens, 64, dtype)
    out, lse = decode(inputs, s_q, h_q, h_kv, causal)
    assert out.dtype == dtype and out.shape == (b, s_q, h_q, 512) and lse.shape == (b, h_q, s_q)
    check_against_reference(inputs, out, lse, causal, batches=subset(b, rng))


@pytest.mark.parametrize("dtype", [BF16, FP16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("page_size", [1, 16, 32, 64, 128, 256])
@pytest.mark.parametrize("heads,s_q", [((16, 1), 1), ((128, 1), 2), ((32, 2), 4)])
def test_page_sizes(page_size, dtype, heads, s_q):
    h_q, h_kv = heads
    rng = np.random.default_rng(page_size * 7 + s_q)
    lens = seqlens_for(rng, 5, 700, s_q, varlen=True)
    inputs = make_inputs(rng, 5, s_q, h_q, h_kv, lens, page_size, dtype)
    out, lse = decode(inputs, s_q, h_q, h_kv, causal=s_q > 1)
    check_against_reference(inputs, out, lse, causal=s_q > 1)


@pytest.mark.parametrize("dtype", [BF16, FP16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("h_q,s_q", [(16, 1), (64, 2), (128, 1)])
def test_some_lengths_zero(dtype, h_q, s_q):
    rng = np.random.default_rng(h_q + s_q)
    lens = seqlens_for(rng, 12, 300, s_q, varlen=True, zero_some=True)
    inputs = make_inputs(rng, 12, s_q, h_q, 1, lens, 64, dtype)
    out, lse = decode(inputs, s_q, h_q, 1, causal=s_q > 1)
    got = np.asarray(out.get()).astype(np.float32)
    zero = lens == 0
    assert (got[zero] == 0).all() and np.isinf(lse.get()[zero]).all() and (lse.get()[zero] > 0).all()
    check_against_reference(inputs, out, lse, causal=s_q > 1)


def test_all_lengths_zero():
    rng = np.random.default_rng(3)
    inputs = make_inputs(rng, 3, 1, 16, 1, [0, 0, 0], 64, BF16)
    out, lse = decode(inputs, 1, 16, 1, causal=False)
    assert (out.get().astype(np.float32) == 0).all() and np.isposinf(lse.get()).all()


@pytest.mark.parametrize("s_q", [1, 3, 8, 16])
def test_long_queries_causal(s_q):
    """s_q up to 16 (speculative decoding), causal, with a kv head of 16 query heads."""
    rng = np.random.default_rng(s_q)
    lens = seqlens_for(rng, 3, 400, s_q, varlen=True)
    lens[0] = s_q  # the first query token is the first token: it sees exactly one key
    inputs = make_inputs(rng, 3, s_q, 16, 1, lens, 64, BF16)
    out, lse = decode(inputs, s_q, 16, 1, causal=True)
    check_against_reference(inputs, out, lse, causal=True)


def test_causal_with_fewer_keys_than_queries():
    """L < s_q: the first queries see nothing (out 0, lse +inf)."""
    rng = np.random.default_rng(11)
    inputs = make_inputs(rng, 2, 4, 8, 1, [2, 1], 16, BF16)
    out, lse = decode(inputs, 4, 8, 1, causal=True)
    check_against_reference(inputs, out, lse, causal=True)


def test_long_sequence_256k():
    rng = np.random.default_rng(5)
    lens = np.array([262144 + 17], dtype=np.int32)
    inputs = make_inputs(rng, 1, 1, 16, 1, lens, 64, BF16, garbage=False)
    out, lse = decode(inputs, 1, 16, 1, causal=False)
    check_against_reference(inputs, out, lse, causal=False)


@pytest.mark.parametrize("h_q,dtype", [(128, BF16), (256, FP16)], ids=["h128-bf16", "h256-fp16"])
def test_many_short_sequences_a_part(h_q, dtype):
    """Many sequences a CTA, most of an odd number of 64-token tiles: the 64-token seesaw's two
    buffers then swap between its A and B tiles, whose halves are different slices."""
    rng = np.random.default_rng(h_q)
    lens = (64 * rng.choice([1, 3, 5, 2], size=600) - rng.integers(0, 40, size=600)).astype(np.int32)
    inputs = make_inputs(rng, 600, 1, h_q, 1, lens, 64, dtype)
    out, lse = decode(inputs, 1, h_q, 1, causal=False)
    check_against_reference(inputs, out, lse, causal=False, batches=np.sort(rng.choice(600, 24, replace=False)))


def test_batch_4096():
    rng = np.random.default_rng(6)
    lens = rng.integers(0, 200, size=4096).astype(np.int32)
    inputs = make_inputs(rng, 4096, 1, 16, 1, lens, 64, BF16, garbage=False)
    out, lse = decode(inputs, 1, 16, 1, causal=False)
    check_against_reference(inputs, out, lse, causal=False, batches=rng.choice(4096, 16, replace=False))


def test_head_dim_512_and_scale():
    rng = np.random.default_rng(8)
    lens = seqlens_for(rng, 4, 500, 2, varlen=True)
    inputs = make_inputs(rng, 4, 2, 32, 2, lens, 32, FP16, d=512)
    meta, splits = cupymla.get_mla_metadata(inputs["cache_seqlens"], 2 * 16, 2)
    out, lse = cupymla.flash_mla_with_kvcache(*(inputs[k] for k in ("q", "k_cache", "block_table", "cache_seqlens")),
                                             512, meta, splits, softmax_scale=0.3, causal=True)
    check_against_reference(inputs, out, lse, causal=True, softmax_scale=0.3)


@pytest.mark.parametrize("h_q,page_size,s_q,scale", [(128, 64, 1, 100.0), (128, 16, 1, 100.0), (64, 32, 2, 100.0),
                                                     (16, 64, 1, 100.0), (32, 64, 1, 100.0), (32, 64, 1, 6.0)],
                         ids=["seesaw", "sm90-page16", "seesaw-causal", "narrow", "narrow32", "narrow32-within-slack"])
def test_large_logits_rescale(h_q, page_size, s_q, scale):
    """Logits spread over hundreds (softmax_scale 100 on the test data's small q, k): the running
    maxima jump past the kernels' slack on many tiles, so every rescale path runs (O and row sums
    of both warpgroups, the seesaw's P_A rescale), not only the first tile's. With a smaller
    scale the maxima also climb by less than the slack, where the exponentials keep an old base
    and P reaches above 1."""
    rng = np.random.default_rng(31)
    lens = seqlens_for(rng, 3, 1500, s_q, varlen=True)
    inputs = make_inputs(rng, 3, s_q, h_q, 1, lens, page_size, BF16)
    meta, splits = cupymla.get_mla_metadata(inputs["cache_seqlens"], s_q * h_q, 1)
    out, lse = cupymla.flash_mla_with_kvcache(*(inputs[k] for k in ("q", "k_cache", "block_table", "cache_seqlens")),
                                             512, meta, splits, softmax_scale=scale, causal=s_q > 1)
    check_against_reference(inputs, out, lse, causal=s_q > 1, softmax_scale=scale)


def test_lazy_metadata_reused_and_checked():
    rng = np.random.default_rng(9)
    lens = seqlens_for(rng, 6, 900, 1, varlen=True)
    inputs = make_inputs(rng, 6, 1, 64, 1, lens, 64, BF16)
    meta, none = cupymla.get_mla_metadata()
    assert none is None
    args = [inputs[k] for k in ("q", "k_cache", "block_table", "cache_seqlens")]
    out1, lse1 = cupymla.flash_mla_with_kvcache(*args, 512, meta, None)
    out2, lse2 = cupymla.flash_mla_with_kvcache(*args, 512, meta, None)   # reuse, as across layers
    check_against_reference(inputs, out1, lse1, causal=False)
    assert (out1 == out2).all() and (lse1 == lse2).all()
    other = make_inputs(rng, 6, 1, 128, 1, lens, 64, BF16)
    with pytest.raises(ValueError, match="tile_scheduler_metadata"):
        cupymla.flash_mla_with_kvcache(*(other[k] for k in ("q", "k_cache", "block_table", "cache_seqlens")),
                                       512, meta, None)


def test_out_buffers_and_strided_q():
    import cupy as cp
    rng = np.random.default_rng(10)
    lens = seqlens_for(rng, 3, 300, 1, varlen=True)
    inputs = make_inputs(rng, 3, 1, 16, 1, lens, 64, BF16)
    # q as a strided view: heads interleaved with padding (last dim still contiguous).
    big = cp.zeros((3, 1, 32, 576), dtype=BF16)
    big[:, :, ::2] = inputs["q"]
    inputs["q"] = big[:, :, ::2]
    out = cp.full((3, 1, 16, 512), np.nan, dtype=BF16)
    lse = cp.full((3, 16, 1), np.nan, dtype=np.float32)
    got_out, got_lse = decode(inputs, 1, 16, 1, causal=False, out=out, lse=lse)
    assert got_out is out and got_lse is lse
    check_against_reference(inputs, out, lse, causal=False)


def test_metadata_kernel_matches_numpy_twin():
    import cupy as cp
    rng = np.random.default_rng(12)
    kinds = set()
    for trial in range(60):
        # Mostly batches the kernel stages in shared memory, some past it (> 3072 sequences);
        # every other one short enough that the payload is searched (smallest_payload).
        b = int(rng.integers(1, 300)) if trial % 10 else int(rng.integers(3000, 5000))
        lens = rng.integers(0, 20000 if trial % 2 else 1500, size=b).astype(np.int32)
        if trial % 3 == 0:
            lens[rng.random(b) < 0.5] = 0
        rows, h_kv = [(16, 1), (128, 1), (64, 8), (256, 1)][trial % 4]
        meta, splits = cupymla.get_mla_metadata(cp.asarray(lens), rows, h_kv)
        want_meta, want_splits = scheduler.schedule(lens, meta.shape[0])
        np.testing.assert_array_equal(meta.get(), want_meta)
        np.testing.assert_array_equal(splits.get(), want_splits)
        nblocks = -(-lens // scheduler.BLOCK_N)
        share = -(-(int(nblocks.sum()) + scheduler.FIXED_OVERHEAD * b) // meta.shape[0])
        least = scheduler.smallest_payload(nblocks, meta.shape[0])
        kinds.add("large share" if share > scheduler.SEARCH_SHARE else
                  "searched, smaller" if least < share + scheduler.FIXED_OVERHEAD else "searched, same")
    assert kinds == {"large share", "searched, smaller", "searched, same"}, kinds


def test_results_are_deterministic():
    rng = np.random.default_rng(13)
    lens = seqlens_for(rng, 64, 2000, 1, varlen=True)
    inputs = make_inputs(rng, 64, 1, 128, 1, lens, 64, BF16)
    out1, lse1 = decode(inputs, 1, 128, 1, causal=False)
    out2, lse2 = decode(inputs, 1, 128, 1, causal=False)
    assert (out1.view(np.uint16) == out2.view(np.uint16)).all() and (lse1 == lse2).all()

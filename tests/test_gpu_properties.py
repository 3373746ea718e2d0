"""Properties of the decode kernels on random layouts (hypothesis; GPU, skipped without one).

Whatever kernel the shape picks (Hopper: decode_sm90_narrow.cu for <= 32 query rows per kv
head, decode_sm90.cu above; elsewhere decode_sm80.cu), and whatever page size, lengths, heads,
causality and dtype:
* the result matches the NumPy oracle within FlashMLA's tolerances;
* where the pages live does not matter: moving every page to another slot of the cache (and
  renumbering the block table) gives bit-for-bit the same out and lse.
"""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tests.gpu_cases import check_against_reference, decode, make_inputs  # noqa: E402
from tests.test_gpu_decode import BF16, FP16  # noqa: E402

pytestmark = pytest.mark.gpu


@st.composite
def layouts(draw):
    b = draw(st.integers(1, 5))
    s_q = draw(st.integers(1, 4))
    h_kv = draw(st.sampled_from([1, 2]))
    heads_per_kv = draw(st.sampled_from([1, 3, 8, 16, 20, 32, 64]))
    lens = draw(st.lists(st.integers(0, 700), min_size=b, max_size=b))
    return dict(b=b, s_q=s_q, h_q=h_kv * heads_per_kv, h_kv=h_kv, lens=lens,
                page_size=draw(st.sampled_from([16, 32, 64, 128])),
                dtype=draw(st.sampled_from([BF16, FP16])), causal=draw(st.booleans()),
                seed=draw(st.integers(0, 2**31 - 1)))


def _moved_pages(inputs, rng):
    """The same cache with its pages in other slots and the block table renumbered to match."""
    import cupy as cp
    k, bt = inputs["k_cache"], cp.asnumpy(inputs["block_table"])
    num_pages = k.shape[0]
    new_slot = rng.permutation(num_pages).astype(np.int32)
    moved = cp.empty_like(k)
    moved[cp.asarray(new_slot)] = k
    in_range = (bt >= 0) & (bt < num_pages)   # garbage entries past a sequence stay garbage
    bt2 = np.where(in_range, new_slot[np.clip(bt, 0, num_pages - 1)], bt).astype(np.int32)
    return dict(inputs, k_cache=moved, block_table=cp.asarray(bt2))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layouts())
def test_random_layouts_match_the_oracle_wherever_the_pages_live(c):
    import cupy as cp
    rng = np.random.default_rng(c["seed"])
    inputs = make_inputs(rng, c["b"], c["s_q"], c["h_q"], c["h_kv"], c["lens"], c["page_size"], c["dtype"])
    out, lse = decode(inputs, c["s_q"], c["h_q"], c["h_kv"], causal=c["causal"])
    check_against_reference(inputs, out, lse, causal=c["causal"])

    out2, lse2 = decode(_moved_pages(inputs, rng), c["s_q"], c["h_q"], c["h_kv"], causal=c["causal"])
    assert cp.array_equal(out2.view(np.uint16), out.view(np.uint16)), "out depends on where the pages live"
    assert cp.array_equal(lse2, lse), "lse depends on where the pages live"

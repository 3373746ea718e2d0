"""q copied by the copy engine (decode_sm90_seesaw64.cu with a tma.q_map): every query layout the
map takes (heads per kv head a multiple or a divisor of 64, partial last m tiles whose missing
rows the copy engine fills with zeros, several kv heads, strided q), the layouts it refuses
(the kernel then loads q with cp.async), and new q pointers on a known plan (the map holds no
pointer: the kernel reaches q by coordinates from the map's fixed base)."""

import os

import numpy as np
import pytest

from cupymla import api
from tests.gpu_cases import check_against_reference, decode, make_inputs, seqlens_for

pytestmark = pytest.mark.gpu

import ml_dtypes  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
FP16 = np.dtype(np.float16)


def _hopper():
    import cupy as cp
    return cp.cuda.Device().compute_capability == "90"


def _only_plan():
    """The one plan made since the test cleared the cache (plans are only a cache)."""
    assert len(api._PLANS) == 1
    return next(iter(api._PLANS.values()))


def _seesaw64_expected():
    """Hopper with the default kernel choice: more than 64 rows on pages of 64 take seesaw64."""
    env = os.environ
    return _hopper() and env.get("CUPYMLA_SM90_SEESAW64", "1") != "0" and env.get("CUPYMLA_SM90_SEESAW", "1") != "0" \
        and not env.get("CUPYMLA_DECODE_PATH")


# (h_q, h_kv, s_q, mapped): rows = s_q * h_q / h_kv > 64 picks the 64-token seesaw on Hopper.
LAYOUTS = [
    (128, 1, 1, True),    # 128 heads a kv head: two m tiles of 64 heads
    (128, 1, 2, True),    # s_q 2: an m tile is 64 heads of one query position
    (256, 2, 1, True),    # two kv heads, 128 heads each
    (64, 1, 3, True),     # 64 heads: an m tile is one query position
    (32, 1, 3, True),     # 96 rows: the second m tile's rows 32-63 are past s_q (zeros)
    (16, 1, 5, True),     # 80 rows, 4 query positions a tile
    (96, 1, 1, False),    # 96 heads: a tile spans two query positions' heads unevenly
    (24, 1, 4, False),    # 24 does not divide 64
]


@pytest.mark.parametrize("h_q,h_kv,s_q,mapped", LAYOUTS, ids=[f"h{a}x{b}-sq{c}" for a, b, c, _ in LAYOUTS])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_q_layouts(h_q, h_kv, s_q, mapped, causal):
    api._PLANS.clear()
    rng = np.random.default_rng(h_q * 100 + s_q * 10 + causal)
    dtype = FP16 if causal else BF16
    lens = seqlens_for(rng, 5, 700, s_q, varlen=True)
    inputs = make_inputs(rng, 5, s_q, h_q, h_kv, lens, 64, dtype)
    out, lse = decode(inputs, s_q, h_q, h_kv, causal)
    check_against_reference(inputs, out, lse, causal)
    plan = _only_plan()
    if _seesaw64_expected():
        pytest.importorskip("cuda.bindings")
        assert (plan.q_map is not None) == mapped


def test_strided_q_and_new_q_pointers():
    """A q view with padded heads and NaN in the padding, then a second and a third q (other
    pointers, far apart) on the same plan and map."""
    import cupy as cp
    api._PLANS.clear()
    rng = np.random.default_rng(31)
    lens = seqlens_for(rng, 4, 900, 1, varlen=True)
    inputs = make_inputs(rng, 4, 1, 128, 1, lens, 64, BF16)
    big = cp.full((4, 1, 160, 576), np.nan, dtype=BF16)   # NaN where no head is: a wrong read shows
    big[:, :, :128] = inputs["q"]
    inputs["q"] = big[:, :, :128]
    out, lse = decode(inputs, 1, 128, 1, False)
    check_against_reference(inputs, out, lse, False)
    plan = _only_plan()
    if _seesaw64_expected():
        pytest.importorskip("cuda.bindings")
        assert plan.q_map is not None
    spacer = cp.empty(3 << 30, dtype=cp.uint8)   # 3 GB: the next q lies far from the first
    for sign in (-1, 1):
        big2 = cp.full_like(big, np.nan)
        big2[:, :, :128] = cp.asarray(sign * inputs["q"].astype(cp.float32) * 0.5).astype(BF16)
        inputs["q"] = big2[:, :, :128]
        out, lse = decode(inputs, 1, 128, 1, False)
        check_against_reference(inputs, out, lse, False)
        assert _only_plan() is plan
    del spacer

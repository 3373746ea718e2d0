"""16-bit partial results of split sequences (MLA_ACC16; api._partials_16bit): the seesaw kernels'
plans store them in the element type by default, CUPYMLA_PARTIALS=fp32 keeps fp32. Both match the
oracle on split-heavy batches, and the 16-bit build's error stays within twice the fp32 build's
(measured: about 1.3x, bench/acc_error.py)."""

import numpy as np
import pytest

import cupymla
from cupymla import api
from tests.gpu_cases import check_against_reference, make_inputs, seqlens_for

pytestmark = pytest.mark.gpu

import ml_dtypes  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
FP16 = np.dtype(np.float16)

CASES = [  # b, s_q, h_q, s_k, causal, dtype: few long sequences, split over many parts
    (8, 1, 128, 6000, False, BF16),
    (16, 2, 128, 2500, True, FP16),
    (24, 1, 64, 3000, False, BF16),
]


@pytest.mark.parametrize("b,s_q,h_q,s_k,causal,dtype", CASES,
                         ids=[f"b{c[0]}-sq{c[1]}-h{c[2]}-{np.dtype(c[5]).name}" for c in CASES])
def test_16bit_partials_match_the_oracle_and_fp32(monkeypatch, b, s_q, h_q, s_k, causal, dtype):
    import cupy as cp
    rng = np.random.default_rng(b + h_q)
    inputs = make_inputs(rng, b, s_q, h_q, 1, seqlens_for(rng, b, s_k, s_q, True), 64, dtype)
    meta, splits = cupymla.get_mla_metadata(inputs["cache_seqlens"], s_q * h_q, 1)
    assert int((cp.diff(splits) > 1).sum()) >= b // 2, "too few split sequences to test the partials"
    errs = {}
    for env in ("", "fp32"):
        monkeypatch.setenv("CUPYMLA_PARTIALS", env)
        api._PLANS.clear()   # plans are cached by layout, not by environment
        out, lse = cupymla.flash_mla_with_kvcache(inputs["q"], inputs["k_cache"], inputs["block_table"],
                                                  inputs["cache_seqlens"], 512, meta, splits, causal=causal)
        errs[env] = check_against_reference(inputs, out, lse, causal)
        plan, = api._PLANS.values()
        assert plan.acc16 == (env == "")
    api._PLANS.clear()
    assert errs[""] <= 2 * errs["fp32"] + 1e-5, errs

"""Which plans store split sequences' partial results in 16 bits (MLA_ACC16, common/params.cuh;
api._partials_16bit), checked without a GPU (tests/cpu_stubs.py): the seesaw kernels' plans do,
with their combine and their portable fallback built alike; the narrow kernel's do not;
CUPYMLA_PARTIALS=fp32 turns it off. tests/test_gpu_decode.py checks the results on a GPU."""

import types

import numpy as np
import pytest

from cupymla import api, kernels
from cupymla.arrays import BF16
from tests import cpu_stubs

B, PAGES = 2, 64


def _decode_once(monkeypatch, h_q, page_size):
    """One bf16 decode call of B sequences on CPU stubs (tests/cpu_stubs.py, installed by the
    caller), from a fresh plan cache; returns the (file, defines) of every kernel it built."""
    monkeypatch.setattr(api, "_PLANS", {})
    built = []
    fn = types.SimpleNamespace(kernel=types.SimpleNamespace(ptr=0xF00D), num_regs=128)
    monkeypatch.setattr(kernels, "get_function", lambda device, file, defines=None, smem=0: built.append((file, defines)) or fn)
    stream = cpu_stubs.FakeStream()
    monkeypatch.setattr(cpu_stubs, "CURRENT", stream)
    monkeypatch.setattr(api.arrays._cupy.cuda, "get_current_stream", lambda device_id=None: stream)
    _, num_parts = api._plan(0, h_q, 1)
    api.flash_mla_with_kvcache(
        q=cpu_stubs.empty((B, 1, h_q, 576), BF16), k_cache=cpu_stubs.empty((PAGES, page_size, 1, 576), BF16),
        block_table=cpu_stubs.empty((B, 8), np.int32), cache_seqlens=cpu_stubs.empty((B,), np.int32),
        head_dim_v=512, tile_scheduler_metadata=cpu_stubs.empty((num_parts, 8), np.int32),
        num_splits=cpu_stubs.empty((B + 1,), np.int32))
    return built


@pytest.mark.parametrize("h_q, page_size, env, no_map, want", [
    (128, 64, "", False, True),       # decode_sm90_seesaw64.cu
    (64, 64, "", False, True),        # decode_sm90_seesaw.cu
    (128, 64, "", True, True),        # no tensor map: the seesaw plan runs its portable kernel, alike
    (128, 1, "", False, False),       # pages of 1: decode_sm90.cu's plan, run by the portable kernel
    (16, 64, "", False, False),       # decode_sm90_narrow.cu
    (128, 64, "fp32", False, False),
    (128, 64, "FP32 ", False, False),
])
def test_16bit_partials_where_measured_faster(monkeypatch, h_q, page_size, env, no_map, want):
    cpu_stubs.install_stubs(monkeypatch.setattr)
    if no_map:
        monkeypatch.setattr(api.tma, "k_cache_map", lambda *a, **k: None)
    monkeypatch.setenv("CUPYMLA_PARTIALS", env)
    built = _decode_once(monkeypatch, h_q, page_size)
    (plan,) = api._PLANS.values()
    assert plan.acc16 == want
    # What the call launched: the combine and the plan's decode kernel, or its portable one. (Pages
    # of 1 also built the seesaw kernel once, for api._plan's register count, not launched.)
    kernel = {128: "decode_sm90_seesaw64.cu", 64: "decode_sm90_seesaw.cu", 16: "decode_sm90_narrow.cu"}[h_q]
    launched = {"combine.cu", "decode_sm80.cu" if page_size == 1 or no_map else kernel}
    assert launched <= {file for file, _ in built}
    for file, defines in built:
        if file in launched:
            assert ("MLA_ACC16" in defines) == want and defines.get("MLA_ACC16", 1) == 1, (file, defines)


@pytest.mark.parametrize("h_q, want", [(16, 128), (32, 128), (64, 256), (128, 256)])
def test_l2_promotion_by_kernel(monkeypatch, h_q, want):
    """The tensor map's L2 promotion the plan asks for (api._DecodePlan.l2_promotion): 128 bytes
    for the narrow kernel, 256 for the seesaw kernels."""
    cpu_stubs.install_stubs(monkeypatch.setattr)
    asked = []
    monkeypatch.setattr(api.tma, "k_cache_map",
                        lambda k, rows, sub=False, slices=0, promotion=256: asked.append(promotion) or ([0] * 16, 5))
    _decode_once(monkeypatch, h_q, 64)
    assert asked == [want]

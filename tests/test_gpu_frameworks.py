"""Inputs from PyTorch and JAX: results come back in the same framework, on its stream."""

import numpy as np
import pytest

import cupymla
from tests.gpu_cases import check_against_reference, make_inputs, seqlens_for

pytestmark = pytest.mark.gpu

import ml_dtypes  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)


def _inputs(seed=0, b=4, s_q=2, h_q=32, h_kv=1):
    rng = np.random.default_rng(seed)
    lens = seqlens_for(rng, b, 600, s_q, varlen=True)
    return make_inputs(rng, b, s_q, h_q, h_kv, lens, 64, BF16), s_q, h_q, h_kv


def test_torch_in_torch_out_on_current_stream():
    torch = pytest.importorskip("torch")
    inputs, s_q, h_q, h_kv = _inputs(1)
    t = {k: torch.from_dlpack(v) for k, v in inputs.items()}
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        meta, splits = cupymla.get_mla_metadata(t["cache_seqlens"], s_q * h_q // h_kv, h_kv)
        out, lse = cupymla.flash_mla_with_kvcache(t["q"], t["k_cache"], t["block_table"], t["cache_seqlens"],
                                                 512, meta, splits, causal=True)
    side.synchronize()
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16 and out.is_cuda
    assert isinstance(lse, torch.Tensor) and lse.dtype == torch.float32
    assert isinstance(meta, torch.Tensor) and meta.dtype == torch.int32
    import cupy as cp
    check_against_reference(inputs, cp.from_dlpack(out), cp.from_dlpack(lse), causal=True)


def test_torch_lazy_metadata_and_out_buffers():
    torch = pytest.importorskip("torch")
    inputs, s_q, h_q, h_kv = _inputs(2, s_q=1)
    t = {k: torch.from_dlpack(v) for k, v in inputs.items()}
    out = torch.empty((4, 1, 32, 512), dtype=torch.bfloat16, device="cuda")
    lse = torch.empty((4, 32, 1), dtype=torch.float32, device="cuda")
    meta, _ = cupymla.get_mla_metadata()
    got, got_lse = cupymla.flash_mla_with_kvcache(t["q"], t["k_cache"], t["block_table"], t["cache_seqlens"],
                                                 512, meta, None, out=out, lse=lse)
    assert got is out and got_lse is lse
    torch.cuda.synchronize()
    import cupy as cp
    check_against_reference(inputs, cp.from_dlpack(out), cp.from_dlpack(lse), causal=False)


def test_jax_in_jax_out():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp
    if not any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("JAX sees no GPU")
    inputs, s_q, h_q, h_kv = _inputs(3)
    j = {k: jnp.from_dlpack(v) for k, v in inputs.items()}
    meta, splits = cupymla.get_mla_metadata(j["cache_seqlens"], s_q * h_q // h_kv, h_kv)
    out, lse = cupymla.flash_mla_with_kvcache(j["q"], j["k_cache"], j["block_table"], j["cache_seqlens"],
                                             512, meta, splits, causal=True)
    assert isinstance(out, jax.Array) and out.dtype == jnp.bfloat16 and isinstance(lse, jax.Array)
    import cupy as cp
    check_against_reference(inputs, cp.asarray(np.asarray(out)), cp.asarray(np.asarray(lse)), causal=True)

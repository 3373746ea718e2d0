"""A decode step captured in a CUDA graph (CuPy and torch) replays correctly with new inputs
written in place, and runs on a non-default stream."""

import numpy as np
import pytest

import cupymla
from tests.gpu_cases import check_against_reference, make_inputs, seqlens_for

pytestmark = pytest.mark.gpu

import ml_dtypes  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
B, S_Q, H_Q = 6, 2, 64


def _inputs(seed):
    rng = np.random.default_rng(seed)
    lens = seqlens_for(rng, B, 900, S_Q, varlen=True)
    return make_inputs(rng, B, S_Q, H_Q, 1, lens, 64, BF16)


def test_cupy_graph_capture_and_replay():
    import cupy as cp
    inputs = _inputs(1)
    stream = cp.cuda.Stream(non_blocking=True)
    out = cp.empty((B, S_Q, H_Q, 512), dtype=BF16)
    lse = cp.empty((B, H_Q, S_Q), dtype=np.float32)
    args = [inputs[k] for k in ("q", "k_cache", "block_table", "cache_seqlens")]
    with stream:
        meta, splits = cupymla.get_mla_metadata(inputs["cache_seqlens"], S_Q * H_Q, 1)
        cupymla.flash_mla_with_kvcache(*args, 512, meta, splits, causal=True, out=out, lse=lse)  # warm-up
        stream.synchronize()
        stream.begin_capture()
        cupymla.flash_mla_with_kvcache(*args, 512, meta, splits, causal=True, out=out, lse=lse)
        graph = stream.end_capture()
        for seed in (2, 3):   # new queries in place, then replay
            fresh = _inputs(seed)
            inputs["q"][...] = fresh["q"]
            out.fill(np.nan)
            graph.launch(stream)
            stream.synchronize()
            check_against_reference(inputs, out, lse, causal=True)


def test_torch_graph_capture_and_replay():
    torch = pytest.importorskip("torch")
    inputs = _inputs(4)
    t = {k: torch.from_dlpack(v) for k, v in inputs.items()}
    meta, splits = cupymla.get_mla_metadata(t["cache_seqlens"], S_Q * H_Q, 1)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):   # warm-up outside capture, as torch asks
        for _ in range(2):
            cupymla.flash_mla_with_kvcache(t["q"], t["k_cache"], t["block_table"], t["cache_seqlens"], 512,
                                           meta, splits, causal=True)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, lse = cupymla.flash_mla_with_kvcache(t["q"], t["k_cache"], t["block_table"], t["cache_seqlens"], 512,
                                                 meta, splits, causal=True)
    import cupy as cp
    for seed in (5, 6):
        fresh = _inputs(seed)
        t["q"].copy_(torch.from_dlpack(fresh["q"]))
        graph.replay()
        torch.cuda.synchronize()
        inputs["q"] = cp.from_dlpack(t["q"])
        check_against_reference(inputs, cp.from_dlpack(out), cp.from_dlpack(lse), causal=True)

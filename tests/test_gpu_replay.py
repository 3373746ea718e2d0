"""The replay cache on a GPU (api._DecodePlan.launch): calls that would launch the same bytes
replay a CUDA graph, which must read the arrays' contents when it runs and never write to an old
output; it stays out of the way of a caller's own capture and can be switched off."""

import numpy as np
import pytest

import cupymla
from cupymla import api
from tests.gpu_cases import check_against_reference, make_inputs, seqlens_for

pytestmark = pytest.mark.gpu

import ml_dtypes  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
B, S_Q, H_Q = 5, 2, 64


def _setup(seed):
    import cupy as cp
    rng = np.random.default_rng(seed)
    lens = seqlens_for(rng, B, 700, S_Q, varlen=True)
    inputs = make_inputs(rng, B, S_Q, H_Q, 1, lens, 64, BF16)
    meta, splits = cupymla.get_mla_metadata(inputs["cache_seqlens"], S_Q * H_Q, 1)
    out = cp.full((B, S_Q, H_Q, 512), np.nan, dtype=BF16)
    lse = cp.full((B, H_Q, S_Q), np.nan, dtype=np.float32)
    return rng, lens, inputs, meta, splits, out, lse


def _call(inputs, meta, splits, out, lse):
    return cupymla.flash_mla_with_kvcache(inputs["q"], inputs["k_cache"], inputs["block_table"],
                                          inputs["cache_seqlens"], 512, meta, splits, causal=True, out=out, lse=lse)


@pytest.fixture(autouse=True)
def _own_plans(monkeypatch):
    """Each test starts with no plans, so _plan() finds the one its calls made (tests' inputs
    differ in block-table width, so an earlier test's plan of the same shape is another plan)."""
    monkeypatch.setattr(api, "_PLANS", {})


def _plan():
    (plan,) = [p for p in api._PLANS.values()
               if (p.shape.batch, p.shape.s_q, p.shape.h_q, p.shape.h_kv) == (B, S_Q, H_Q, 1)]
    return plan


def _new_contents(rng, lens, inputs, meta, splits):
    """New q values and shorter (random) sequence lengths, written in place (same pointers), and
    the schedule of those lengths copied into the same schedule arrays."""
    import cupy as cp
    fresh = make_inputs(rng, B, S_Q, H_Q, 1, lens, 64, BF16)
    inputs["q"][...] = fresh["q"]
    new_lens = np.asarray([rng.integers(S_Q, L + 1) if L >= S_Q else L for L in lens], dtype=np.int32)
    inputs["cache_seqlens"][...] = cp.asarray(new_lens)
    m2, s2 = cupymla.get_mla_metadata(inputs["cache_seqlens"], S_Q * H_Q, 1)
    meta[...] = m2
    splits[...] = s2


@pytest.mark.parametrize("replay", [True, False])
def test_repeated_calls_read_new_contents(replay, monkeypatch):
    import cupy as cp
    monkeypatch.setattr(api, "_REPLAY", replay)
    rng, lens, inputs, meta, splits, out, lse = _setup(11)
    _call(inputs, meta, splits, out, lse)
    plan = _plan()
    replays0 = plan.replays
    for _ in range(4):
        _new_contents(rng, lens, inputs, meta, splits)
        out.fill(np.nan)
        lse.fill(np.nan)
        got_out, got_lse = _call(inputs, meta, splits, out, lse)
        assert got_out is out and got_lse is lse
        cp.cuda.get_current_stream().synchronize()
        check_against_reference(inputs, out, lse, causal=True)
    if replay:
        assert plan.replay_ok, plan.replay_error
        assert plan.replays - replays0 == 4   # the 2nd call captured and replayed, the rest replayed
    else:
        assert plan.replays == replays0


def test_new_outputs_each_call_are_right():
    """Results the API allocates (one allocation, two views) with the cache on: every result
    kept alive (new pointers each call) and dropped (the pool's pointer comes back: replays)."""
    import cupy as cp
    rng, lens, inputs, meta, splits, _, _ = _setup(12)
    kept = []
    for i in range(3):
        _new_contents(rng, lens, inputs, meta, splits)
        out, lse = _call(inputs, meta, splits, None, None)
        cp.cuda.get_current_stream().synchronize()
        check_against_reference(inputs, out, lse, causal=True)
        kept.append((out, lse))
    for i in range(3):
        _new_contents(rng, lens, inputs, meta, splits)
        out, lse = _call(inputs, meta, splits, None, None)
        cp.cuda.get_current_stream().synchronize()
        check_against_reference(inputs, out, lse, causal=True)
        del out, lse


def test_other_out_pointers_get_the_results():
    import cupy as cp
    rng, lens, inputs, meta, splits, out_a, lse_a = _setup(13)
    _call(inputs, meta, splits, out_a, lse_a)
    plan = _plan()
    replays0 = plan.replays
    for _ in range(2):                    # a graph for out_a/lse_a, replayed
        _call(inputs, meta, splits, out_a, lse_a)
    assert plan.replays - replays0 == 2, plan.replay_error
    replays0 = plan.replays
    out_a.fill(np.nan)
    lse_a.fill(np.nan)
    out_b = cp.full_like(out_a, np.nan)
    lse_b = cp.full_like(lse_a, np.nan)
    _new_contents(rng, lens, inputs, meta, splits)
    _call(inputs, meta, splits, out_b, lse_b)
    cp.cuda.get_current_stream().synchronize()
    check_against_reference(inputs, out_b, lse_b, causal=True)
    assert plan.replays == replays0       # a new key: launched directly
    assert bool(cp.isnan(out_a.astype(cp.float32)).all()) and bool(cp.isnan(lse_a).all()), "old out written"


def test_inside_a_callers_capture_launches_directly():
    import cupy as cp
    rng, lens, inputs, meta, splits, out, lse = _setup(14)
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        _call(inputs, meta, splits, out, lse)
        plan = _plan()
        replays0 = plan.replays
        for _ in range(2):                # a graph exists for this very key on this stream
            _call(inputs, meta, splits, out, lse)
        stream.synchronize()
        assert plan.replays - replays0 == 2, plan.replay_error
        replays0, captures0 = plan.replays, plan.captures
        stream.begin_capture()
        try:
            _call(inputs, meta, splits, out, lse)
        finally:
            graph = stream.end_capture()
        assert (plan.replays, plan.captures) == (replays0, captures0)
        for _ in range(2):
            _new_contents(rng, lens, inputs, meta, splits)
            out.fill(np.nan)
            graph.launch(stream)
            stream.synchronize()
            check_against_reference(inputs, out, lse, causal=True)
    assert plan.replay_ok, plan.replay_error

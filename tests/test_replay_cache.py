"""The replay cache's bookkeeping (api._DecodePlan.launch) without a GPU: CuPy, the driver and the
device are the stand-ins of tests/cpu_stubs.py, so these check which launches and graph replays
the API asks for, not what a GPU does with them (tests/test_gpu_replay.py does that)."""

import numpy as np
import pytest

from cupymla import api
from cupymla.arrays import BF16
from tests import cpu_stubs

B, H_Q, PAGES = 2, 128, 64


@pytest.fixture
def stubbed(monkeypatch):
    cpu_stubs.install_stubs(monkeypatch.setattr)
    monkeypatch.setattr(api, "_PLANS", {})
    monkeypatch.setattr(api, "_REPLAY", True)
    stream = cpu_stubs.FakeStream()
    monkeypatch.setattr(cpu_stubs, "CURRENT", stream)
    monkeypatch.setattr(api.arrays._cupy.cuda, "get_current_stream", lambda device_id=None: stream)
    cpu_stubs.LAUNCHES.clear()
    cpu_stubs.GRAPH_LAUNCHES.clear()
    cpu_stubs.CAPTURING.clear()
    _, num_parts = api._plan(0, H_Q, 1)
    x = dict(q=cpu_stubs.empty((B, 1, H_Q, 576), BF16), k_cache=cpu_stubs.empty((PAGES, 64, 1, 576), BF16),
             block_table=cpu_stubs.empty((B, 8), np.int32), cache_seqlens=cpu_stubs.empty((B,), np.int32),
             head_dim_v=512, tile_scheduler_metadata=cpu_stubs.empty((num_parts, 8), np.int32),
             num_splits=cpu_stubs.empty((B + 1,), np.int32))
    return x, stream


def _outs(i):
    """An out and an lse at addresses of their own (i-th pair)."""
    return (cpu_stubs.FakeArray((B, 1, H_Q, 512), BF16, 0x100000000 * (i + 1)),
            cpu_stubs.FakeArray((B, H_Q, 1), np.float32, 0x100000000 * (i + 1) + 0x10000000))


def _plan():
    (plan,) = api._PLANS.values()
    return plan


def test_second_sighting_captures_then_replays(stubbed):
    x, stream = stubbed
    api.flash_mla_with_kvcache(**x)
    assert [s for _, s in cpu_stubs.LAUNCHES] == [stream.ptr, stream.ptr]   # first call: direct
    plan = _plan()
    assert (plan.captures, plan.replays) == (0, 0)
    api.flash_mla_with_kvcache(**x)          # second: captured on the private stream, replayed
    cap = plan._capture_stream.ptr
    assert cap != stream.ptr
    assert cpu_stubs.LAUNCHES[2:] == [("plain", cap), ("ex", cap)]   # the combine keeps its PDL launch
    assert cpu_stubs.GRAPH_LAUNCHES == [stream.ptr]
    for _ in range(3):
        api.flash_mla_with_kvcache(**x)
    assert len(cpu_stubs.LAUNCHES) == 4 and cpu_stubs.GRAPH_LAUNCHES == [stream.ptr] * 4
    assert (plan.captures, plan.replays) == (1, 4)
    assert not cpu_stubs.CAPTURING   # the private capture ended


def test_new_out_pointers_never_replay_a_stale_graph(stubbed):
    x, stream = stubbed
    for _ in range(2):
        api.flash_mla_with_kvcache(**x, out=_outs(0)[0], lse=_outs(0)[1])
    plan = _plan()
    assert plan.replays == 1
    n = len(cpu_stubs.LAUNCHES)
    out, lse = _outs(1)
    got = api.flash_mla_with_kvcache(**x, out=out, lse=lse)
    assert got == (out, lse)
    assert plan.replays == 1 and cpu_stubs.LAUNCHES[n:] == [("plain", stream.ptr), ("ex", stream.ptr)]


def test_graphs_per_plan_are_capped(stubbed):
    x, _ = stubbed
    for i in range(api._GRAPHS_PER_PLAN + 3):
        for _ in range(2):
            api.flash_mla_with_kvcache(**x, out=_outs(i)[0], lse=_outs(i)[1])
    plan = _plan()
    assert plan.captures == api._GRAPHS_PER_PLAN + 3 and len(plan._graphs) == api._GRAPHS_PER_PLAN


def test_a_working_set_larger_than_the_cache_stops_replaying(stubbed):
    """Calls cycling through more keys than a plan keeps graphs for would capture every key again
    and again (tens of us each): the plan gives up replaying, with a reason, and captures stop."""
    x, _ = stubbed
    keys = api._GRAPHS_PER_PLAN + 8
    for _ in range(40):
        for i in range(keys):
            api.flash_mla_with_kvcache(**x, out=_outs(i)[0], lse=_outs(i)[1])
    plan = _plan()
    assert not plan.replay_ok and "replay cache holds" in plan.replay_error
    captures = plan.captures
    assert captures <= 3 * api._GRAPHS_PER_PLAN
    for i in range(keys):
        for _ in range(2):
            api.flash_mla_with_kvcache(**x, out=_outs(i)[0], lse=_outs(i)[1])
    assert plan.captures == captures


def test_bypassed_while_the_callers_stream_captures(stubbed):
    x, stream = stubbed
    for _ in range(2):
        api.flash_mla_with_kvcache(**x)
    plan = _plan()
    cpu_stubs.CAPTURING.add(stream.ptr)
    n = len(cpu_stubs.LAUNCHES)
    api.flash_mla_with_kvcache(**x)
    assert cpu_stubs.LAUNCHES[n:] == [("plain", stream.ptr), ("ex", stream.ptr)]
    assert plan.replays == 1


def test_off_switch(stubbed, monkeypatch):
    x, stream = stubbed
    monkeypatch.setattr(api, "_REPLAY", False)
    for _ in range(4):
        api.flash_mla_with_kvcache(**x)
    assert _plan().captures == 0 and not cpu_stubs.GRAPH_LAUNCHES and len(cpu_stubs.LAUNCHES) == 8


def test_a_failed_capture_falls_back_for_good(stubbed, monkeypatch):
    x, stream = stubbed
    api.flash_mla_with_kvcache(**x)
    plan = _plan()
    monkeypatch.setattr(cpu_stubs.FakeStream, "begin_capture",
                        lambda self, mode=None: (_ for _ in ()).throw(RuntimeError("stub: no capture")))
    for _ in range(3):
        api.flash_mla_with_kvcache(**x)   # never raises
    assert not plan.replay_ok and "no capture" in plan.replay_error
    assert len(cpu_stubs.LAUNCHES) == 8 and not cpu_stubs.GRAPH_LAUNCHES


def test_a_launch_error_inside_the_capture_ends_it(stubbed, monkeypatch):
    x, stream = stubbed
    api.flash_mla_with_kvcache(**x)
    plan = _plan()
    real = api.launch._launch_kernel
    monkeypatch.setattr(api.launch, "_launch_kernel",
                        lambda *a: 1 if a[8].value == plan._capture_stream.ptr else real(*a))
    cap_ptr = None

    def make_stream(*a, **k):   # the private stream, made at the first capture
        nonlocal cap_ptr
        s = cpu_stubs.FakeStream(*a, **k)
        cap_ptr = s.ptr
        return s
    monkeypatch.setattr(api.arrays._cupy.cuda, "Stream", make_stream)
    api.flash_mla_with_kvcache(**x)   # the capture fails inside; the call launches directly
    assert not plan.replay_ok and cap_ptr not in cpu_stubs.CAPTURING
    assert cpu_stubs.LAUNCHES[-2:] == [("plain", stream.ptr), ("ex", stream.ptr)]

"""Several GPUs in one process: arrays on GPU i run on GPU i whatever the current device,
modules are cached per device, and threads decoding on different GPUs do not interfere.
Each test runs on every visible GPU and skips where fewer GPUs than it needs are visible."""

import threading

import numpy as np
import pytest

import cupymla
from tests.conftest import GPU_COUNT
from tests.gpu_cases import check_against_reference, make_inputs, seqlens_for

pytestmark = pytest.mark.gpu

import ml_dtypes  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)


def _decode(inputs, s_q, h_q, causal):
    meta, splits = cupymla.get_mla_metadata(inputs["cache_seqlens"], s_q * h_q, 1)
    return cupymla.flash_mla_with_kvcache(inputs["q"], inputs["k_cache"], inputs["block_table"],
                                          inputs["cache_seqlens"], 512, meta, splits, causal=causal)


def _inputs_on(device, seed, b=5, s_q=2, h_q=64):
    import cupy as cp
    rng = np.random.default_rng(seed)
    with cp.cuda.Device(device):
        lens = seqlens_for(rng, b, 1500, s_q, varlen=True)
        return make_inputs(rng, b, s_q, h_q, 1, lens, 64, BF16)


@pytest.mark.parametrize("device", range(max(GPU_COUNT, 1)))
def test_each_gpu_while_gpu0_is_current(device):
    import cupy as cp
    inputs = _inputs_on(device, seed=device)
    with cp.cuda.Device(0):
        out, lse = _decode(inputs, 2, 64, causal=True)
    assert out.device.id == device and lse.device.id == device
    with cp.cuda.Device(device):
        check_against_reference(inputs, out, lse, causal=True)


@pytest.mark.skipif(GPU_COUNT < 2, reason="needs 2 GPUs")
def test_inputs_on_gpu1_from_torch_while_gpu0_current():
    torch = pytest.importorskip("torch")
    import cupy as cp
    inputs = _inputs_on(1, seed=7)
    t = {k: torch.from_dlpack(v) for k, v in inputs.items()}
    torch.cuda.set_device(0)
    meta, splits = cupymla.get_mla_metadata(t["cache_seqlens"], 2 * 64, 1)
    out, lse = cupymla.flash_mla_with_kvcache(t["q"], t["k_cache"], t["block_table"], t["cache_seqlens"],
                                             512, meta, splits, causal=True)
    assert out.device == torch.device("cuda", 1) and meta.device == torch.device("cuda", 1)
    torch.cuda.synchronize(1)
    with cp.cuda.Device(1):
        check_against_reference(inputs, cp.from_dlpack(out), cp.from_dlpack(lse), causal=True)


@pytest.mark.skipif(GPU_COUNT < 2, reason="needs 2 GPUs")
def test_two_threads_two_gpus_concurrently():
    import cupy as cp
    results, errors = {}, []
    inputs = {d: _inputs_on(d, seed=100 + d, b=16, h_q=128) for d in (0, 1)}
    start = threading.Barrier(2)

    def worker(device):
        try:
            with cp.cuda.Device(device):
                start.wait()
                outs = [_decode(inputs[device], 2, 128, causal=True) for _ in range(20)]
                cp.cuda.Device(device).synchronize()
                results[device] = outs
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append((device, exc))

    threads = [threading.Thread(target=worker, args=(d,)) for d in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for device, outs in results.items():
        with cp.cuda.Device(device):
            check_against_reference(inputs[device], *outs[-1], causal=True)
            for out, _ in outs:
                assert out.device.id == device
                assert (out.view(np.uint16) == outs[0][0].view(np.uint16)).all()


def test_threads_on_one_gpu_with_their_own_streams():
    """Caches (plans, scratch per stream, tensor maps) shared by threads that decode at once."""
    import cupy as cp
    inputs = [_inputs_on(0, seed=200 + i, b=8, h_q=64) for i in range(4)]
    results, errors = {}, []
    start = threading.Barrier(4)

    def worker(i):
        try:
            stream = cp.cuda.Stream(non_blocking=True)
            with stream:
                start.wait()
                outs = [_decode(inputs[i], 2, 64, causal=True) for _ in range(10)]
                stream.synchronize()
            results[i] = outs
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append((i, exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, outs in results.items():
        check_against_reference(inputs[i], *outs[-1], causal=True)
        for out, _ in outs:
            assert (out.view(np.uint16) == outs[0][0].view(np.uint16)).all()

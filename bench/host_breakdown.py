"""Where the host time of one decode call goes, piece by piece (run on a GPU machine).

    PYTHONPATH=. python3 bench/host_breakdown.py [--all]   (--all: also b = 32, another stream, torch)

Times, in microseconds per call (median of 5 runs of n calls): the whole call back to back (as
`python -m cupymla bench` reports host_us), the whole call with the GPU idle before each one
(only the call timed), with the replay cache on and off (api._REPLAY, CUPYMLA_REPLAY), and the
parts the call is made of, each on its own.
"""

import ctypes
import statistics
import sys
import time

import cupy as cp
import ml_dtypes
import numpy as np

import cupymla
from cupy_backends.cuda.api import driver
from cupymla import api, arrays, launch
from tests.gpu_cases import make_inputs, seqlens_for


def per_call(fn, n=2000, runs=5, sync_each=False):
    out = []
    for _ in range(runs):
        if sync_each:
            total = 0.0
            for _ in range(n // 10):
                cp.cuda.Device().synchronize()
                t = time.perf_counter()
                fn()
                total += time.perf_counter() - t
            out.append(total / (n // 10) * 1e6)
        else:
            t = time.perf_counter()
            for _ in range(n):
                fn()
            out.append((time.perf_counter() - t) / n * 1e6)
            cp.cuda.Device().synchronize()
    return statistics.median(out)


def main(b=2, s_k=256, h_q=128):
    rng = np.random.default_rng(0)
    lens = seqlens_for(rng, b, s_k, 1, True)
    inp = make_inputs(rng, b, 1, h_q, 1, lens, 64, np.dtype(ml_dtypes.bfloat16), garbage=False)
    meta, splits = cupymla.get_mla_metadata(inp["cache_seqlens"], h_q, 1)
    args = (inp["q"], inp["k_cache"], inp["block_table"], inp["cache_seqlens"], 512, meta, splits)

    def call():
        cupymla.flash_mla_with_kvcache(*args)

    for _ in range(50):
        call()
    cp.cuda.Device().synchronize()
    plan = next(p for p in api._PLANS.values() if p.shape.batch == b)
    stream = cp.cuda.get_current_stream()
    q, kc, bt, sl = inp["q"], inp["k_cache"], inp["block_table"], inp["cache_seqlens"]
    o_accum, lse_accum = plan.scratch(stream, q)
    out = cp.empty((b, 1, h_q, 512), q.dtype)
    lse = cp.empty((b, h_q, 1), np.float32)
    dec_ptrs = tuple(x.data.ptr for x in (q, kc, bt, sl, meta, splits, out, lse, o_accum, lse_accum))
    k_map, k_rank = plan.last_k_map[1] or ((0,) * 16, 0)
    os_ = plan.out_strides

    def key():   # as the API builds it
        qv, kv, bv, sv, mv, pv = (arrays.view(x, "x") for x in (q, kc, bt, sl, meta, splits))
        sig = (mv.shape, mv.strides, mv.dtype, mv.data.device_id, pv.shape, pv.strides, pv.dtype, pv.data.device_id)
        return api._plan_key(qv, kv, bv, sv, sig, 512, None, False)

    dec_fields = (os_[0], os_[1], os_[2], plan.box_rows, k_rank, k_map)
    comb_ptrs = (o_accum.data.ptr, lse_accum.data.ptr, splits.data.ptr, out.data.ptr, lse.data.ptr)

    def decode_launch():   # the API's per-call path (Launcher.run)
        plan.decode.run(stream.ptr, dec_ptrs, dec_fields)

    def combine_launch():
        plan.combine.run(stream.ptr, comb_ptrs, os_)

    # A graph the warm-up calls captured: its out/lse are pool blocks of dropped results, which
    # `out`, `lse` or `out_given` may now occupy; its writes there are harmless here.
    graph = next(iter(plan._graphs.values()), None)

    def graph_launch():
        graph.launch(stream)

    dec = plan.decode
    fn = launch._driver_launch()
    gx, gy, gz = (dec.grid + (1, 1))[:3]
    kptr = dec.kernel.kernel.ptr
    args_addr = ctypes.addressof(dec._args)

    def raw_ctypes():
        fn(*dec._fixed, ctypes.c_void_p(stream.ptr), dec._args, None)

    def raw_cupy():
        driver.launchKernel(kptr, gx, gy, gz, dec.block[0], 1, 1, dec.shared_mem, stream.ptr, args_addr, 0)

    nop = cp.RawKernel('extern "C" __global__ void nop() {}', "nop")
    nop((1,), (32,), ())

    def raw_nop():
        driver.launchKernel(nop.kernel.ptr, 1, 1, 1, 32, 1, 1, 0, stream.ptr, 0, 0)

    def fill():
        dec.prepacked.fill_into(dec.buf, dec_ptrs, dec._last, o_stride_b=os_[0], o_stride_s=os_[1],
                                o_stride_h=os_[2], k_box_rows=plan.box_rows, k_map_rank=k_rank, k_map=k_map)

    def whole_call(replay):
        api._REPLAY = replay
        for _ in range(10):
            call()
        cp.cuda.Device().synchronize()
        return per_call(call)

    replay_default = api._REPLAY
    replay_on, replay_off = whole_call(True), whole_call(False)
    api._REPLAY = replay_default
    out_given = (cp.empty((b, 1, h_q, 512), q.dtype), cp.empty((b, h_q, 1), np.float32))
    for _ in range(10):
        cupymla.flash_mla_with_kvcache(*args, out=out_given[0], lse=out_given[1])

    def one_alloc():
        mem = cp.cuda.alloc(plan._out_bytes + plan._lse_bytes)
        return cp.ndarray((b, 1, h_q, 512), q.dtype, mem), cp.ndarray((b, h_q, 1), np.float32, mem + plan._out_bytes)

    rows = [
        ("whole call, back to back (CUPYMLA_REPLAY as set)", per_call(call)),
        ("whole call, back to back, replay cache on", replay_on),
        ("whole call, back to back, replay cache off", replay_off),
        ("whole call, out=/lse= given, back to back", per_call(
            lambda: cupymla.flash_mla_with_kvcache(*args, out=out_given[0], lse=out_given[1]))),
        ("  replays so far, all plans (a count, not us)", float(sum(p.replays for p in api._PLANS.values()))),
        ("whole call, GPU idle before it", per_call(call, sync_each=True)),
        ("6 views + signatures (the plan key)", per_call(key)),
        ("cp.empty out + lse", per_call(lambda: (cp.empty((b, 1, h_q, 512), q.dtype),
                                                 cp.empty((b, h_q, 1), np.float32)))),
        ("one cuda.alloc + 2 ndarray views (new_outputs)", per_call(one_alloc)),
        # Launches timed one at a time with the GPU idle: back to back, a launch loop runs at
        # the kernel's GPU time once the queue fills (session 5's first breakdown did that).
        ("decode launch (Launcher), GPU idle", per_call(decode_launch, sync_each=True)),
        ("combine launch (Launcher, PDL), GPU idle", per_call(combine_launch, sync_each=True)),
        ("  of which: fill_into", per_call(fill)),
        ("  of which: bare ctypes cuLaunchKernel, idle", per_call(raw_ctypes, sync_each=True)),
        ("  the same through CuPy's driver.launchKernel", per_call(raw_cupy, sync_each=True)),
        ("an empty kernel through driver.launchKernel", per_call(raw_nop, sync_each=True)),
        ("decode launch back to back (GPU-bound?)", per_call(decode_launch)),
        ("a cached graph's launch (decode + combine), idle",
         per_call(graph_launch, sync_each=True) if graph is not None else float("nan")),
        ("cudaStreamIsCapturing", per_call(lambda: cp.cuda.runtime.streamIsCapturing(stream.ptr))),
        ("cp.cuda.get_current_stream()", per_call(cp.cuda.get_current_stream)),
        ("arrays.on_device(0) enter/exit", per_call(lambda: arrays.on_device(0).__enter__())),
        ("arrays.stream_for(q, 0)", per_call(lambda: arrays.stream_for(q, 0))),
    ]
    print(f"--- b={b} s_k={s_k} h_q={h_q}, kernel {plan.decode.kernel.kernel.ptr:#x}")
    for name, us in rows:
        print(f"  {name:40s} {us:7.2f} us")


if __name__ == "__main__":
    main()
    if "--all" not in sys.argv:
        sys.exit(0)
    main(b=32, s_k=1024)
    # The bench runs on a stream of its own, with torch imported: do either change the cost?
    with cp.cuda.Stream(non_blocking=True):
        print("=== on a non-default stream")
        main()
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        print("=== with torch imported")
        main()

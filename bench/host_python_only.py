"""The Python cost of one decode call, measured without a GPU (CPU stubs for everything that needs one).

    PYTHONPATH=. python3 bench/host_python_only.py

What is stubbed (tests/cpu_stubs.py), so what these numbers are NOT: CuPy is replaced by a fake
module (arrays are plain objects with shape/strides/dtype/data.ptr/device; ``empty`` and
``cuda.alloc`` hand back a fixed pointer per size, as CuPy's pool does when the previous result
was freed; streams and graphs do nothing), the driver's launch functions are no-op Python
functions, the device properties and compiled kernels are made up (an H200's: 132 SMs, compute
capability 9.0). So a "launch" here is the Launcher's Python (lock, packing, argument tuple) plus
a no-op call, where the real driver call costs ~3.5-4 us (bench/host_breakdown.py on the H200);
a graph replay is a no-op call where cudaGraphLaunch costs 1.2-2.6 us; an allocation is the
wrapper's Python, not CuPy's pool. The fake arrays' attributes are plain slots, cheaper than
CuPy's properties (CuPy builds a new shape/strides tuple per access). Compare runs of this
script with each other, on one machine; the H200's numbers come from bench/host_breakdown.py.

Runs against older versions of cupymla too (it uses what exists), e.g. the base of branch
host-lean: ``git archive 198f3a0 cupymla | tar -x -C /tmp/base`` then
``PYTHONPATH=/tmp/base:. python3 bench/host_python_only.py``.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from cupymla import api, arrays
from cupymla.arrays import BF16
from tests.cpu_stubs import CURRENT, empty as _empty, install_stubs

# --------------------------------------------------------------------------- timing

def per_call(fn, n=20000, runs=7):
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        out.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(out)


def main(b=2, s_q=1, h_q=128, page=64):
    install_stubs(record=False)
    num_pages, max_blocks = 64, 8
    q = _empty((b, s_q, h_q, 576), BF16)
    kc = _empty((num_pages, page, 1, 576), BF16)
    bt = _empty((b, max_blocks), np.int32)
    sl = _empty((b,), np.int32)
    _, num_parts = api._plan(0, s_q * h_q, 1)
    meta = _empty((num_parts, 8), np.int32)
    splits = _empty((b + 1,), np.int32)
    args = (q, kc, bt, sl, 512, meta, splits)
    out = _empty((b, s_q, h_q, 512), BF16)
    lse = _empty((b, h_q, s_q), np.float32)
    call = lambda: api.flash_mla_with_kvcache(*args)   # noqa: E731
    call_out = lambda: api.flash_mla_with_kvcache(*args, out=out, lse=lse)   # noqa: E731
    for _ in range(10):
        call()
        call_out()
    plan = next(p for p in api._PLANS.values() if p.shape.batch == b)
    stream = CURRENT
    o_accum, lse_accum = plan.scratch(stream, q)
    dec_ptrs = tuple(x.data.ptr for x in (q, kc, bt, sl, meta, splits, out, lse, o_accum, lse_accum))
    comb_ptrs = (o_accum.data.ptr, lse_accum.data.ptr, splits.data.ptr, out.data.ptr, lse.data.ptr)
    k_map, k_rank = [0x1234] * 16, 5
    os_ = plan.out_strides
    dec = plan.decode

    view = arrays.view

    def key():   # as the API builds it: on this version, or as on the base commit (198f3a0)
        qc, kcv, btv, slv, sc, sp = (view(x, "x") for x in (q, kc, bt, sl, meta, splits))
        plan_key = getattr(api, "_plan_key", None)
        if plan_key is not None:
            sig = (sc.shape, sc.strides, sc.dtype, sc.data.device_id, sp.shape, sp.strides, sp.dtype,
                   sp.data.device_id)
            return plan_key(qc, kcv, btv, slv, sig, 512, None, False)
        return (api._signature(qc), api._signature(kcv), api._signature(btv), api._signature(slv),
                (api._signature(sc), api._signature(sp)), 512, None, False, type(None), bool, int)

    dec_fields = (os_[0], os_[1], os_[2], plan.box_rows, k_rank, k_map)

    def decode_launch():
        if hasattr(dec, "run"):   # this version's per-call path
            dec.run(stream.ptr, dec_ptrs, dec_fields)
        else:
            dec(stream.ptr, dec_ptrs, o_stride_b=os_[0], o_stride_s=os_[1], o_stride_h=os_[2],
                k_box_rows=plan.box_rows, k_map_rank=k_rank, k_map=k_map)

    def combine_launch():
        if hasattr(plan.combine, "run"):
            plan.combine.run(stream.ptr, comb_ptrs, os_)
        else:
            plan.combine(stream.ptr, comb_ptrs, o_stride_b=os_[0], o_stride_s=os_[1], o_stride_h=os_[2])

    def fill():
        dec.prepacked.fill_into(dec.buf, dec_ptrs, dec._last, o_stride_b=os_[0], o_stride_s=os_[1],
                                o_stride_h=os_[2], k_box_rows=plan.box_rows, k_map_rank=k_rank, k_map=k_map)

    def alloc():   # the new outputs as the API makes them for CuPy arrays
        if hasattr(plan, "new_outputs"):
            plan.new_outputs(arrays.cupy_module())
        else:
            arrays.empty_like_framework(q, (b, s_q, h_q, 512), BF16, 0, True)
            arrays.empty_like_framework(q, (b, h_q, s_q), np.float32, 0, True)

    rows = []
    replay_flag = hasattr(api, "_REPLAY")
    if replay_flag:
        for on in (True, False):
            api._REPLAY = on
            api._PLANS.clear()
            for _ in range(10):
                call()
                call_out()
            tag = "replay cache on" if on else "replay cache off"
            rows.append((f"whole call, new out/lse, {tag}", per_call(call)))
            rows.append((f"whole call, out=/lse= given, {tag}", per_call(call_out)))
            replays = sum(p.replays for p in api._PLANS.values())
            assert (replays > 0) == on, f"replays {replays} with the cache {'on' if on else 'off'}"
        api._REPLAY = True
    else:
        rows.append(("whole call, new out/lse (no replay cache)", per_call(call)))
        rows.append(("whole call, out=/lse= given (no replay cache)", per_call(call_out)))
    rows += [
        ("plan key (6 views + signatures)", per_call(key)),
        ("out + lse allocation wrappers (stub cp.empty)", per_call(alloc)),
        ("decode launch (Launcher, no-op driver)", per_call(decode_launch)),
        ("combine launch (Launcher, no-op driver)", per_call(combine_launch)),
        ("  fill_into, every field (decode struct)", per_call(fill)),
    ]
    print(f"--- CPU stubs, b={b} s_q={s_q} h_q={h_q} page={page}; Python {sys.version.split()[0]}")
    for name, us in rows:
        print(f"  {name:52s} {us:7.2f} us")


if __name__ == "__main__":
    main()

"""The Python cost of one decode call, measured without a GPU (CPU stubs for everything that needs one).

    PYTHONPATH=. python3 bench/host_python_only.py

What is stubbed, so what these numbers are NOT: CuPy is replaced by a fake module (arrays are
plain objects with shape/strides/dtype/data.ptr/device; ``empty`` hands back a fixed pointer per
size, as CuPy's pool does when the previous result was freed; streams and graphs do nothing), the
driver's launch functions are no-op Python functions, the device properties and compiled kernels
are made up (an H200's: 132 SMs, compute capability 9.0). So a "launch" here is the Launcher's
Python (lock, fill_into, argument tuple) plus a no-op call, where the real driver call costs
~3.5-4 us (bench/host_breakdown.py on the H200), and an allocation is the wrapper's Python, not
CuPy's pool. The fake arrays' attributes are plain slots, cheaper than CuPy's properties (CuPy
builds a new shape/strides tuple per access). Compare runs of this script with each other, on one
machine; the H200's numbers come from bench/host_breakdown.py only.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
import types

import numpy as np

from cupymla import api, arrays, kernels, launch, tma
from cupymla.arrays import BF16

# --------------------------------------------------------------------------- the stubs


class _Data:
    __slots__ = ("ptr", "device_id")

    def __init__(self, ptr, device_id=0):
        self.ptr, self.device_id = ptr, device_id


class _Device:
    __slots__ = ("id",)

    def __init__(self, i=0):
        self.id = i


class _Flags:
    c_contiguous = True


class FakeArray:
    """What the API reads of a CuPy array: shape, strides (bytes), dtype, itemsize, ndim,
    data.ptr, data.device_id, device.id, flags.c_contiguous."""
    __slots__ = ("shape", "strides", "dtype", "itemsize", "ndim", "data", "device", "flags", "size")

    def __init__(self, shape, dtype, ptr):
        dtype = np.dtype(dtype)
        self.shape, self.dtype, self.itemsize, self.ndim = tuple(shape), dtype, dtype.itemsize, len(shape)
        st, acc = [], dtype.itemsize
        for n in reversed(self.shape):
            st.append(acc)
            acc *= n
        self.strides = tuple(reversed(st))
        self.size = acc // dtype.itemsize
        self.data, self.device, self.flags = _Data(ptr), _Device(0), _Flags()


_POOL: dict = {}


def _empty(shape, dtype=np.float32):
    """A fixed pointer per (shape, dtype), as CuPy's pool hands the freed block back when calls
    run back to back; the same object each time, so the stub itself costs next to nothing."""
    key = (shape, dtype)
    found = _POOL.get(key)
    if found is None:
        shape = tuple(shape) if isinstance(shape, tuple) else (shape,)
        found = _POOL[key] = FakeArray(shape, dtype, 0x7F0000000000 + 0x100000000 * len(_POOL))
    return found


class FakeGraph:
    launches = 0

    def launch(self, stream=None):
        FakeGraph.launches += 1

    def upload(self, stream=None):
        pass


class FakeStream:
    _next = 0x5000

    def __init__(self, null=False, non_blocking=False, ptr=None):
        if ptr is None:
            FakeStream._next += 0x10
            ptr = 0 if null else FakeStream._next
        self.ptr = ptr
        self.device_id = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def begin_capture(self, mode=None):
        pass

    def end_capture(self):
        return FakeGraph()

    def is_capturing(self):
        return False

    def synchronize(self):
        pass


_CURRENT = FakeStream(null=True)


def _fake_cupy():
    runtime = types.SimpleNamespace(
        getDevice=lambda: 0, streamIsCapturing=lambda ptr: False,
        streamCaptureModeGlobal=0, streamCaptureModeThreadLocal=1, streamCaptureModeRelaxed=2,
        CUDARuntimeError=RuntimeError)
    cuda = types.SimpleNamespace(
        runtime=runtime, get_current_stream=lambda device_id=None: _CURRENT,
        Device=lambda i=None: contextlib.nullcontext(), Stream=FakeStream,
        ExternalStream=lambda ptr, device_id=None: FakeStream(ptr=ptr))
    return types.SimpleNamespace(ndarray=FakeArray, empty=_empty, cuda=cuda)


def install_stubs():
    arrays._cupy = _fake_cupy()
    arrays._cupy_ndarray = FakeArray
    kernels.device_info = lambda device_id: {"name": "stub H200", "cc": (9, 0), "sms": 132,
                                             "smem_optin": 227 * 1024, "smem_per_sm": 228 * 1024}
    fn = types.SimpleNamespace(kernel=types.SimpleNamespace(ptr=0xF00D), num_regs=128)
    kernels.get_function = lambda *a, **k: fn
    tma.k_cache_map = lambda k_cache, box_rows, sub_tiles=False: ([0x1234] * 16, 5)
    noop = lambda *a: 0   # noqa: E731 - the driver calls, stubbed
    launch._launch_kernel = noop
    launch._cupy_launch_kernel = (noop, RuntimeError)
    launch._launch_kernel_ex = noop


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
    install_stubs()
    num_pages, max_blocks = 64, 8
    q = _empty((b, s_q, h_q, 576), BF16)
    kc = _empty((num_pages, page, 1, 576), BF16)
    bt = _empty((b, max_blocks), np.int32)
    sl = _empty((b,), np.int32)
    plan0 = api._DecodePlan  # noqa: F841 - the plan class exists on every version measured
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
    stream = _CURRENT
    o_accum, lse_accum = plan.scratch(stream, q)
    dec_ptrs = tuple(x.data.ptr for x in (q, kc, bt, sl, meta, splits, out, lse, o_accum, lse_accum))
    comb_ptrs = (o_accum.data.ptr, lse_accum.data.ptr, splits.data.ptr, out.data.ptr, lse.data.ptr)
    k_map, k_rank = [0x1234] * 16, 5
    os_ = plan.out_strides
    dec = plan.decode

    def key():
        keyfn = getattr(api, "_plan_key", None)
        if keyfn is not None:
            return keyfn(q, kc, bt, sl, meta, splits, 512, None, False)
        views = [arrays.view(x, "x") for x in (q, kc, bt, sl, meta, splits)]
        return tuple(api._signature(v) for v in views)

    def decode_launch():
        dec(stream.ptr, dec_ptrs, o_stride_b=os_[0], o_stride_s=os_[1], o_stride_h=os_[2],
            k_box_rows=plan.box_rows, k_map_rank=k_rank, k_map=k_map)

    def combine_launch():
        plan.combine(stream.ptr, comb_ptrs, o_stride_b=os_[0], o_stride_s=os_[1], o_stride_h=os_[2])

    def fill():
        dec.prepacked.fill_into(dec.buf, dec_ptrs, dec._last, o_stride_b=os_[0], o_stride_s=os_[1],
                                o_stride_h=os_[2], k_box_rows=plan.box_rows, k_map_rank=k_rank, k_map=k_map)

    def alloc():
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
        api._REPLAY = True
    else:
        rows.append(("whole call, new out/lse (no replay cache)", per_call(call)))
        rows.append(("whole call, out=/lse= given (no replay cache)", per_call(call_out)))
    rows += [
        ("plan key (6 views + signatures)", per_call(key)),
        ("out + lse allocation wrappers (stub cp.empty)", per_call(alloc)),
        ("decode launch (Launcher, no-op driver)", per_call(decode_launch)),
        ("combine launch (Launcher, no-op driver)", per_call(combine_launch)),
        ("  fill_into (decode struct)", per_call(fill)),
    ]
    print(f"--- CPU stubs, b={b} s_q={s_q} h_q={h_q} page={page}; Python {sys.version.split()[0]}")
    for name, us in rows:
        print(f"  {name:52s} {us:7.2f} us")


if __name__ == "__main__":
    main()

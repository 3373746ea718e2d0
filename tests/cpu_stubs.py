"""CPU stand-ins for CuPy, the driver and the device, so that the API's per-call Python runs
without a GPU: bench/host_python_only.py times it, tests/test_replay_cache.py checks the replay
cache's bookkeeping with it. Nothing here touches a GPU; nothing here says anything about one.

Fake arrays have what the API reads of a CuPy array (shape, strides in bytes, dtype, itemsize,
ndim, data.ptr, data.device_id, device.id, flags.c_contiguous). ``empty``/``cuda.alloc`` hand back
a fixed pointer per size, as CuPy's pool does when the previous result was freed, and the same
object each time, so that the stubs themselves cost next to nothing. Streams record captures,
graphs count their launches, the driver's launch functions record their calls.
"""

from __future__ import annotations

import contextlib
import types

import numpy as np

from cupymla import arrays, kernels, launch, tma

class _Data:
    __slots__ = ("ptr", "device_id")

    def __init__(self, ptr, device_id=0):
        self.ptr, self.device_id = ptr, device_id

    def __add__(self, offset):   # a MemoryPointer plus bytes
        return _Data(self.ptr + offset, self.device_id)


class _Device:
    __slots__ = ("id",)

    def __init__(self, i=0):
        self.id = i


class _Flags:
    c_contiguous = True


class FakeArray:
    """A C-contiguous array at ``memptr`` (an int or a fake MemoryPointer); one object per
    (shape, dtype, pointer), made once."""
    __slots__ = ("shape", "strides", "dtype", "itemsize", "ndim", "data", "device", "flags", "size")
    _made: dict = {}

    def __new__(cls, shape, dtype=np.float32, memptr=None):
        ptr = memptr if isinstance(memptr, int) else memptr.ptr
        key = (shape, dtype, ptr)
        found = cls._made.get(key)
        if found is None:
            found = cls._made[key] = object.__new__(cls)
            found._fill(tuple(shape) if isinstance(shape, tuple) else (shape,), np.dtype(dtype), ptr)
        return found

    def _fill(self, shape, dtype, ptr):
        self.shape, self.dtype, self.itemsize, self.ndim = shape, dtype, dtype.itemsize, len(shape)
        st, acc = [], dtype.itemsize
        for n in reversed(shape):
            st.append(acc)
            acc *= n
        self.strides = tuple(reversed(st))
        self.size = acc // dtype.itemsize
        self.data, self.device, self.flags = _Data(ptr), _Device(0), _Flags()


_POOL: dict = {}


def _pool_ptr(key):
    ptr = _POOL.get(key)
    if ptr is None:
        ptr = _POOL[key] = 0x7F0000000000 + 0x100000000 * len(_POOL)
    return ptr


def empty(shape, dtype=np.float32):
    return FakeArray(shape, dtype, _pool_ptr((shape, dtype)))


def alloc(nbytes):
    return _Data(_pool_ptr(nbytes))


class FakeGraph:
    def __init__(self, stream):
        self.captured_on = stream.ptr
        self.launched_on = []

    def launch(self, stream=None):
        self.launched_on.append(stream.ptr)
        GRAPH_LAUNCHES.append(stream.ptr)

    def upload(self, stream=None):
        pass


GRAPH_LAUNCHES: list = []
CAPTURING: set = set()   # stream pointers the fake runtime reports as capturing


class FakeStream:
    _next = 0x5000

    def __init__(self, null=False, non_blocking=False, ptr=None):
        if ptr is None:
            FakeStream._next += 0x10
            ptr = 0 if null else FakeStream._next
        self.ptr = ptr
        self.device_id = 0
        self.fail_capture = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def begin_capture(self, mode=None):
        if self.fail_capture:
            raise RuntimeError("stub: capture refused")
        CAPTURING.add(self.ptr)

    def end_capture(self):
        CAPTURING.discard(self.ptr)
        return FakeGraph(self)

    def is_capturing(self):
        return self.ptr in CAPTURING

    def synchronize(self):
        pass


CURRENT = FakeStream(null=True)


def fake_cupy():
    runtime = types.SimpleNamespace(
        getDevice=lambda: 0, streamIsCapturing=CAPTURING.__contains__,
        streamCaptureModeGlobal=0, streamCaptureModeThreadLocal=1, streamCaptureModeRelaxed=2)
    cuda = types.SimpleNamespace(
        runtime=runtime, get_current_stream=lambda device_id=None: CURRENT,
        Device=lambda i=None: contextlib.nullcontext(), Stream=FakeStream, alloc=alloc,
        ExternalStream=lambda ptr, device_id=None: FakeStream(ptr=ptr))
    return types.SimpleNamespace(ndarray=FakeArray, empty=empty, cuda=cuda)


LAUNCHES: list = []   # (kernel pointer, stream pointer) of each launch through the fake driver


def _fake_launch(func, gx, gy, gz, bx, by, bz, smem, stream, args, extra):
    LAUNCHES.append(("plain", stream.value or 0))
    return 0


def _fake_launch_ex(config_ref, func, args, extra):
    import ctypes
    config = ctypes.cast(config_ref, ctypes.POINTER(launch._LaunchConfig)).contents
    LAUNCHES.append(("ex", config.hStream or 0))
    return 0


def _noop(*args):
    return 0


def install_stubs(setattr=setattr, record=True):
    """Put the stand-ins in place (``setattr``: pytest's monkeypatch.setattr undoes it after a
    test). ``record``: the fake driver records each launch (tests), else does nothing (timing)."""
    setattr(arrays, "_cupy", fake_cupy())
    setattr(arrays, "_cupy_ndarray", FakeArray)
    setattr(kernels, "device_info", lambda device_id: {"name": "stub H200", "cc": (9, 0), "sms": 132,
                                                       "smem_optin": 227 * 1024, "smem_per_sm": 228 * 1024})
    fn = types.SimpleNamespace(kernel=types.SimpleNamespace(ptr=0xF00D), num_regs=128)
    setattr(kernels, "get_function", lambda *a, **k: fn)
    setattr(tma, "k_cache_map", lambda k_cache, box_rows, sub_tiles=False, box_slices=0, promotion=256: ([0x1234] * 16, 5))
    setattr(launch, "_launch_kernel", _fake_launch if record else _noop)
    setattr(launch, "_cupy_launch_kernel", False if record else (_noop, RuntimeError))
    setattr(launch, "_launch_kernel_ex", _fake_launch_ex if record else _noop)

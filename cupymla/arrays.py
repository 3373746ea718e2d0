"""Arrays in and out: DLPack, frameworks, devices and streams.

Inputs may come from CuPy, PyTorch, JAX or anything else with ``__dlpack__``; they are viewed
as CuPy arrays without a copy. Results are allocated by the framework of ``q`` (so a torch
caller gets memory from torch's caching allocator) and returned in it. Kernels run on the
caller's current stream: torch's for torch tensors, CuPy's otherwise.
"""

from __future__ import annotations

import contextlib

import numpy as np

try:
    import ml_dtypes
    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - ml_dtypes is a dependency
    BF16 = None
FP16 = np.dtype(np.float16)

_DL_CUDA, _DL_CUDA_MANAGED, _DL_CPU, _DL_CUDA_HOST = 2, 13, 1, 3


_cupy = None


def cupy_module():
    global _cupy
    if _cupy is None:   # a decode call asks several times: import once
        try:
            import cupy
        except ImportError as exc:
            raise RuntimeError("cupymla needs CuPy for GPU work: pip install 'cupymla[cuda12]' "
                               "(or [cuda13]); the NumPy oracle cupymla.reference needs no GPU") from exc
        _cupy = cupy
    return _cupy


_FRAMEWORKS: dict = {}


def framework_of(x) -> str:
    """'cupy', 'torch', 'jax' or 'dlpack' (anything else speaking DLPack)."""
    kind = type(x)
    found = _FRAMEWORKS.get(kind)
    if found is None:
        mod = kind.__module__
        if mod.startswith("cupy"):
            found = "cupy"
        elif mod.startswith("torch"):
            found = "torch"
        elif mod.startswith(("jax", "jaxlib")):
            found = "jax"
        else:
            found = "dlpack"
        _FRAMEWORKS[kind] = found
    return found


def as_cupy(x, name: str):
    """View ``x`` as a CuPy array on its GPU, or raise TypeError naming the argument."""
    cp = cupy_module()
    if isinstance(x, cp.ndarray):
        return x
    if isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected an array on a CUDA GPU, got a NumPy array (CPU); "
                        f"use cupymla.reference for CPU arrays")
    if not hasattr(x, "__dlpack__"):
        raise TypeError(f"{name}: expected a GPU array (CuPy, PyTorch, JAX or any DLPack producer), "
                        f"got {type(x).__module__}.{type(x).__name__}")
    if hasattr(x, "__dlpack_device__"):
        dev_type, _ = x.__dlpack_device__()
        if int(dev_type) not in (_DL_CUDA, _DL_CUDA_MANAGED):
            raise TypeError(f"{name}: expected an array on a CUDA GPU, got one on DLPack device type "
                            f"{int(dev_type)} ({'CPU' if int(dev_type) in (_DL_CPU, _DL_CUDA_HOST) else 'not CUDA'})")
    try:
        return cp.from_dlpack(x)
    except Exception as exc:  # noqa: BLE001 - report the producer's error with the argument's name
        raise TypeError(f"{name}: could not be viewed through DLPack: {exc}") from exc


class _Device:
    __slots__ = ("id",)

    def __init__(self, i):
        self.id = i


class _Data:
    __slots__ = ("ptr", "device_id")

    def __init__(self, ptr, device_id):
        self.ptr = ptr
        self.device_id = device_id


class _Flags:
    __slots__ = ("_tensor",)

    def __init__(self, t):
        self._tensor = t

    @property
    def c_contiguous(self):   # only validation asks, once per layout: not read per call
        return self._tensor.is_contiguous()


class TorchView:
    """The metadata of a CUDA torch tensor in CuPy's attribute names (shape, dtype, byte strides,
    device.id, data.ptr, data.device_id, flags.c_contiguous), read straight from torch: a DLPack
    round trip per argument would cost more than the rest of a call. Up to 6 tensors are viewed
    per decode call, so only what every call needs is read here."""

    __slots__ = ("tensor", "shape", "ndim", "dtype", "itemsize", "strides", "device", "data", "flags")

    def __init__(self, t):
        self.tensor = t
        self.shape = shape = tuple(t.shape)
        self.ndim = len(shape)
        self.dtype, self.itemsize = _torch_dtype(t.dtype)
        self.strides = tuple(st * self.itemsize for st in t.stride())
        dev = t.get_device()
        self.device = _Device(dev)
        self.data = _Data(t.data_ptr(), dev)
        self.flags = _Flags(t)


_TORCH_DTYPES: dict = {}


def _torch_dtype(tdt):
    """(NumPy twin, bytes per element) of a torch dtype."""
    found = _TORCH_DTYPES.get(tdt)
    if found is None:
        import torch
        if tdt == torch.bfloat16:
            np_dt = BF16
        else:
            try:
                np_dt = np.dtype(str(tdt).removeprefix("torch."))
            except TypeError:
                np_dt = np.dtype([(str(tdt), "V1")])  # no NumPy twin: shows the torch name in errors
        found = _TORCH_DTYPES[tdt] = (np_dt, torch.empty((), dtype=tdt).element_size())
    return found


_cupy_ndarray = None


def view(x, name: str):
    """``x``'s GPU metadata and pointer: the CuPy array itself, a TorchView, or a DLPack view."""
    global _cupy_ndarray
    if _cupy_ndarray is None:
        _cupy_ndarray = cupy_module().ndarray
    if type(x) is _cupy_ndarray:   # the common case first: this runs 4-8 times per call
        return x
    if framework_of(x) == "torch" and hasattr(x, "data_ptr"):
        if not x.is_cuda:
            raise TypeError(f"{name}: expected a tensor on a CUDA GPU, got one on {x.device}")
        return TorchView(x)
    return as_cupy(x, name)


_external_streams: dict = {}


def stream_for(x, device_id: int):
    """The stream the caller expects work on: torch's current stream for torch tensors."""
    cp = cupy_module()
    if framework_of(x) == "torch":
        import torch
        raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)   # what triton reads: no Stream object
        ptr = raw(device_id) if raw is not None else torch.cuda.current_stream(device_id).cuda_stream
        # A wrapper per (stream, device), made once: it only carries the handle.
        found = _external_streams.get((ptr, device_id))
        if found is None:
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # CuPy 14 prefers from_external
                found = _external_streams[(ptr, device_id)] = cp.cuda.ExternalStream(ptr, device_id)
        return found
    return cp.cuda.get_current_stream(device_id)


def empty_like_framework(like, shape, dtype: np.dtype, device_id: int, device_is_current: bool = False):
    """Allocate in the framework of ``like``; return (framework object, a view with .data.ptr).
    ``device_is_current``: the caller already made ``device_id`` current (saves a lookup)."""
    if framework_of(like) == "torch":
        import torch
        tdt = {BF16: torch.bfloat16, FP16: torch.float16, np.dtype(np.float32): torch.float32,
               np.dtype(np.int32): torch.int32}[np.dtype(dtype)]
        t = torch.empty(shape, dtype=tdt, device=_torch_device(device_id))
        return t, _Allocated(t.data_ptr(), device_id)
    cp = cupy_module()
    if device_is_current:
        a = cp.empty(shape, dtype=dtype)
    else:
        with on_device(device_id):
            a = cp.empty(shape, dtype=dtype)
    return a, a


_TORCH_DEVICES: dict = {}


def _torch_device(device_id: int):
    found = _TORCH_DEVICES.get(device_id)
    if found is None:
        import torch
        found = _TORCH_DEVICES[device_id] = torch.device("cuda", device_id)
    return found


class _Allocated:
    """A new contiguous result: the caller already knows its layout, only the pointer is read."""
    __slots__ = ("data",)

    def __init__(self, ptr, device_id):
        self.data = _Data(ptr, device_id)


def to_framework(arr, fw: str):
    """Hand a CuPy array to the framework ``fw`` without a copy."""
    if fw == "torch":
        import torch
        return torch.from_dlpack(arr)
    if fw == "jax":
        import jax.dlpack
        return jax.dlpack.from_dlpack(arr)
    return arr


def on_device(device_id: int):
    """Make ``device_id`` current for CuPy within the block (free when it already is)."""
    cp = cupy_module()
    if cp.cuda.runtime.getDevice() == device_id:
        return contextlib.nullcontext()
    return cp.cuda.Device(device_id)


@contextlib.contextmanager
def on(device_id: int, stream):
    """Make ``device_id`` and ``stream`` current for CuPy within the block."""
    cp = cupy_module()
    with cp.cuda.Device(device_id), stream:
        yield

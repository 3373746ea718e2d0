"""Kernel launches through the CUDA driver's ``cuLaunchKernel``: CuPy's Cython binding of it
where importable, else ctypes.

Each of our kernels takes one struct by value, already packed to bytes (``params.Prepacked``),
so a launch only has to hand the driver a pointer to those bytes. A CuPy ``RawKernel`` call
spends ~10 us of Python/Cython on boxing its arguments, twice per decode call, which is most of
the host time the issue's 15 us budget allows. Where the driver library cannot be loaded by
name (an unusual install), launches go through CuPy as before.

A launcher made with ``overlap_previous=True`` goes through ``cuLaunchKernelEx`` with
programmatic stream serialization (Hopper's programmatic dependent launch): its CTAs may be
scheduled while the previous kernel of the stream is still running, once that kernel's CTAs have
all executed ``griddepcontrol.launch_dependents``, and they must execute ``griddepcontrol.wait``
before reading what it wrote. The combine kernel uses it to hide its launch behind the decode.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from functools import lru_cache

import numpy as np

_launch_kernel = None      # cuLaunchKernel, or False when unavailable
_cupy_launch_kernel = None # CuPy's Cython binding of cuLaunchKernel (and its error type), or False
_launch_kernel_ex = None   # cuLaunchKernelEx where the driver can capture its programmatic launches, else False
_CUDA_ERROR_INVALID_CONTEXT = 201
_CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6
_PDL_MIN_DRIVER = 12030    # CUDA 12.3: programmatic launches captured into graphs keep their edge type


@lru_cache(maxsize=None)
def _driver_lib():
    try:
        return ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
    except OSError:
        return None


def _driver_launch():
    global _launch_kernel
    if _launch_kernel is None:
        lib = _driver_lib()
        fn = getattr(lib, "cuLaunchKernel", None) if lib else None
        if fn is None:
            _launch_kernel = False
        else:
            u = ctypes.c_uint
            fn.argtypes = [ctypes.c_void_p, u, u, u, u, u, u, u, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
            fn.restype = ctypes.c_int
            _launch_kernel = fn
    return _launch_kernel


def _cupy_launch():
    """``(launchKernel, CUDADriverError)`` of CuPy's Cython driver binding, or False. Its typed
    arguments cost ~1.5 us less a launch than ctypes' conversions (H200 machine, GPU idle: 3.5
    against 5.1 us, bench/host_breakdown.py); it is CuPy's internal module, so ctypes stays the
    fallback."""
    global _cupy_launch_kernel
    if _cupy_launch_kernel is None:
        try:
            from cupy_backends.cuda.api import driver
            _cupy_launch_kernel = (driver.launchKernel, driver.CUDADriverError)
        except (ImportError, AttributeError):
            _cupy_launch_kernel = False
    return _cupy_launch_kernel


def _driver_launch_ex():
    global _launch_kernel_ex
    if _launch_kernel_ex is None:
        _launch_kernel_ex = False
        lib = _driver_lib()
        fn = getattr(lib, "cuLaunchKernelEx", None) if lib else None
        version = ctypes.c_int(0)
        if fn is not None and lib.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value >= _PDL_MIN_DRIVER:
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
            fn.restype = ctypes.c_int
            _launch_kernel_ex = fn
    return _launch_kernel_ex


class _LaunchAttribute(ctypes.Structure):   # CUlaunchAttribute: id, padded to 8 bytes, 64-byte value union
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int),
                ("value_pad", ctypes.c_char * 60)]


class _LaunchConfig(ctypes.Structure):      # CUlaunchConfig
    _fields_ = [("gridDimX", ctypes.c_uint), ("gridDimY", ctypes.c_uint), ("gridDimZ", ctypes.c_uint),
                ("blockDimX", ctypes.c_uint), ("blockDimY", ctypes.c_uint), ("blockDimZ", ctypes.c_uint),
                ("sharedMemBytes", ctypes.c_uint), ("hStream", ctypes.c_void_p),
                ("attrs", ctypes.POINTER(_LaunchAttribute)), ("numAttrs", ctypes.c_uint)]


def _function_handle(kernel, device_id):
    """The driver's handle of a CuPy kernel on `device_id` (None: the current device). CuPy loads
    a module once per device and answers for the device current when asked; another device's
    handle fails to launch there (CUDA error 400, invalid handle: arrays on GPU 1 while GPU 0 was
    current, found on two H200s)."""
    if device_id is None:
        return kernel.kernel.ptr
    from . import arrays
    with arrays.cupy_module().cuda.Device(device_id):
        return kernel.kernel.ptr


class Launcher:
    """One kernel of a decode plan with its grid, block and parameter struct: ``launcher(stream,
    pointers, **changed)`` (or ``launcher.run(stream, pointers, fields)``, the API's leaner form)
    writes the pointers and changed fields into the struct, which lives in a buffer of its own,
    and launches. Reusing the buffer and the ctypes arguments leaves one
    foreign call per launch. A lock guards the buffer: threads may share a plan."""

    def __init__(self, kernel, grid, block, shared_mem: int, prepacked, overlap_previous: bool = False,
                 field_names: tuple = (), device_id: int | None = None):
        self.kernel, self.grid, self.block, self.shared_mem = kernel, tuple(grid), tuple(block), shared_mem
        self.prepacked = prepacked
        # run(): the fields after the pointers that a call may change, in the order it gives them.
        self.field_names = tuple(field_names)
        self._last_fields = None
        self.buf = ctypes.create_string_buffer(bytes(prepacked.raw), len(prepacked.raw))
        self._args = (ctypes.c_void_p * 1)(ctypes.addressof(self.buf))
        gx, gy, gz = (self.grid + (1, 1))[:3]
        u = ctypes.c_uint
        func = _function_handle(kernel, device_id)
        self._fixed = (ctypes.c_void_p(func), u(gx), u(gy), u(gz), u(self.block[0]), u(1), u(1), u(shared_mem))
        self._cy_fixed = (func, gx, gy, gz, self.block[0], 1, 1, shared_mem)
        self._args_addr = ctypes.addressof(self._args)
        self._last = {}
        self._lock = threading.Lock()
        # A programmatic launch, when asked for and supported: its CUlaunchConfig, the attribute
        # that config points at (kept alive here) and a reference to the config for the call.
        self._ex = None
        if overlap_previous and _driver_launch() and _driver_launch_ex():
            attr = _LaunchAttribute(id=_CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, value=1)
            config = _LaunchConfig(gx, gy, gz, self.block[0], 1, 1, shared_mem, None, ctypes.pointer(attr), 1)
            self._ex = (config, attr, ctypes.byref(config))

    def __call__(self, stream_ptr: int, pointers, **changed):
        fn = _driver_launch()
        with self._lock:
            self._last_fields = None   # run()'s record of the buffer no longer holds
            self.prepacked.fill_into(self.buf, pointers, self._last, **changed)
            self._launch_locked(fn, stream_ptr)

    def run(self, stream_ptr: int, pointers, fields=()):
        """The per-call path of the API: ``fields`` are the values of ``field_names`` as a tuple.
        When they equal the last call's (a tuple compare, identity first per element), only the
        pointers are written; else every named field is packed again."""
        fn = _launch_kernel if _launch_kernel is not None else _driver_launch()
        with self._lock:
            self.prepacked.pack_pointers(self.buf, pointers)
            if fields != self._last_fields:
                self.prepacked.fill_into(self.buf, pointers, {}, **dict(zip(self.field_names, fields)))
                self._last_fields = fields
                self._last = {}   # __call__'s record of the buffer no longer holds
            self._launch_locked(fn, stream_ptr)

    def _launch_locked(self, fn, stream_ptr):
        """Launch with the buffer as it is (the caller holds the lock)."""
        if not fn:
            import cupy
            self.kernel(self.grid, self.block, (np.frombuffer(bytes(self.buf), dtype=self.prepacked.dtype)[0],),
                        shared_mem=self.shared_mem, stream=cupy.cuda.ExternalStream(stream_ptr))
            return
        err = self._launch(fn, stream_ptr)
        if err == _CUDA_ERROR_INVALID_CONTEXT:
            # A thread whose CUDA runtime state is fresh has no current context yet; setting
            # the (already current) device through the runtime binds its primary context.
            import cupy
            cupy.cuda.runtime.setDevice(cupy.cuda.runtime.getDevice())
            err = self._launch(fn, stream_ptr)
        if err:
            name = "cuLaunchKernelEx" if self._ex else "cuLaunchKernel"
            raise RuntimeError(f"{name} failed with CUDA error {err} (grid {self.grid}, block {self.block}, "
                               f"{self.shared_mem} bytes of shared memory)")

    def _launch(self, fn, stream_ptr):
        if self._ex is None:
            cy = _cupy_launch()
            if cy:
                try:
                    cy[0](*self._cy_fixed, stream_ptr, self._args_addr, 0)
                except cy[1] as e:
                    return getattr(e, "status", 999)   # 999: CUDA_ERROR_UNKNOWN
                return 0
            return fn(*self._fixed, ctypes.c_void_p(stream_ptr), self._args, None)
        config, _, config_ref = self._ex
        config.hStream = stream_ptr
        return _launch_kernel_ex(config_ref, self._fixed[0], self._args, None)   # _fixed[0]: the function

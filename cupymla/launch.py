"""Kernel launches through the CUDA driver's ``cuLaunchKernel``, called with ctypes.

Each of our kernels takes one struct by value, already packed to bytes (``params.Prepacked``),
so a launch only has to hand the driver a pointer to those bytes. A CuPy ``RawKernel`` call
spends ~10 us of Python/Cython on boxing its arguments, twice per decode call, which is most of
the host time the issue's 15 us budget allows. Where the driver library cannot be loaded by
name (an unusual install), launches go through CuPy as before.
"""

from __future__ import annotations

import ctypes
import sys
import threading

import numpy as np

_launch_kernel = None   # cuLaunchKernel, or False when unavailable
_CUDA_ERROR_INVALID_CONTEXT = 201


def _driver_launch():
    global _launch_kernel
    if _launch_kernel is None:
        try:
            lib = ctypes.CDLL("nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1")
            fn = lib.cuLaunchKernel
        except (OSError, AttributeError):
            _launch_kernel = False
        else:
            u = ctypes.c_uint
            fn.argtypes = [ctypes.c_void_p, u, u, u, u, u, u, u, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
            fn.restype = ctypes.c_int
            _launch_kernel = fn
    return _launch_kernel


class Launcher:
    """One kernel of a decode plan with its grid, block and parameter struct: ``launcher(stream,
    pointers, **changed)`` writes the pointers and changed fields into the struct, which lives
    in a buffer of its own, and launches. Reusing the buffer and the ctypes arguments leaves one
    foreign call per launch. A lock guards the buffer: threads may share a plan."""

    def __init__(self, kernel, grid, block, shared_mem: int, prepacked):
        self.kernel, self.grid, self.block, self.shared_mem = kernel, tuple(grid), tuple(block), shared_mem
        self.prepacked = prepacked
        self.buf = ctypes.create_string_buffer(bytes(prepacked.raw), len(prepacked.raw))
        self._args = (ctypes.c_void_p * 1)(ctypes.addressof(self.buf))
        gx, gy, gz = (self.grid + (1, 1))[:3]
        u = ctypes.c_uint
        self._fixed = (ctypes.c_void_p(kernel.kernel.ptr), u(gx), u(gy), u(gz), u(self.block[0]), u(1), u(1),
                       u(shared_mem))
        self._last = {}
        self._lock = threading.Lock()

    def __call__(self, stream_ptr: int, pointers, **changed):
        fn = _driver_launch()
        with self._lock:
            self.prepacked.fill_into(self.buf, pointers, self._last, **changed)
            if not fn:
                import cupy
                self.kernel(self.grid, self.block, (np.frombuffer(bytes(self.buf), dtype=self.prepacked.dtype)[0],),
                            shared_mem=self.shared_mem, stream=cupy.cuda.ExternalStream(stream_ptr))
                return
            stream = ctypes.c_void_p(stream_ptr)
            err = fn(*self._fixed, stream, self._args, None)
            if err == _CUDA_ERROR_INVALID_CONTEXT:
                # A thread whose CUDA runtime state is fresh has no current context yet; setting
                # the (already current) device through the runtime binds its primary context.
                import cupy
                cupy.cuda.runtime.setDevice(cupy.cuda.runtime.getDevice())
                err = fn(*self._fixed, stream, self._args, None)
        if err:
            raise RuntimeError(f"cuLaunchKernel failed with CUDA error {err} (grid {self.grid}, block {self.block}, "
                               f"{self.shared_mem} bytes of shared memory)")

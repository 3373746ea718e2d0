"""cupymla.launch without a GPU: the bytes a Launcher hands the driver must be the full pack of
the call's values, call after call (its buffer is reused and unchanged fields are skipped)."""

import ctypes
from types import SimpleNamespace

import numpy as np
import pytest

from cupymla import launch, params
from tests.test_params_layout import sample_values

CHANGED = ("o_stride_b", "o_stride_s", "o_stride_h", "k_box_rows", "k_map_rank", "k_map", "q_map_rank", "q_map")
MAPS = ("k_map", "q_map")


class FakeDriver:
    """Stands in for cuLaunchKernel: records the launch and copies the struct it points at."""

    def __init__(self, nbytes):
        self.nbytes, self.calls = nbytes, []

    def __call__(self, func, gx, gy, gz, bx, by, bz, smem, stream, args, extra):
        struct_addr = ctypes.cast(args, ctypes.POINTER(ctypes.c_void_p))[0]
        raw = ctypes.string_at(struct_addr, self.nbytes)
        self.calls.append(dict(func=func.value, grid=(gx.value, gy.value, gz.value), block=bx.value,
                               smem=smem.value, stream=stream.value, raw=raw))
        return 0


@pytest.fixture
def decode_launcher(monkeypatch):
    values = sample_values(params.DECODE_PARAMS)
    fixed = {k: v for k, v in values.items() if k in params.DECODE_PARAMS.names[10:] and k not in CHANGED}
    template = params.Prepacked(params.DECODE_PARAMS, 10, **fixed,
                                **{k: ([0] * 16 if k in MAPS else 0) for k in CHANGED})
    driver = FakeDriver(params.DECODE_PARAMS.itemsize)
    monkeypatch.setattr(launch, "_launch_kernel", driver)
    monkeypatch.setattr(launch, "_cupy_launch_kernel", False)   # the ctypes path, which the fake stands in for
    kernel = SimpleNamespace(kernel=SimpleNamespace(ptr=0xABC0))
    return launch.Launcher(kernel, (2, 1, 66), (256,), 232448, template), driver, values


def test_launcher_hands_the_driver_the_packed_struct(decode_launcher):
    launcher, driver, values = decode_launcher
    rng = np.random.default_rng(1)
    for call in range(4):   # new pointers each call; the changed fields change on the third
        vals = dict(values)
        for n in params.DECODE_PARAMS.names[:10]:
            vals[n] = int(rng.integers(1, 2**47)) * 16
        if call >= 2:
            vals.update(o_stride_b=7 * 4096, k_box_rows=32, k_map_rank=4, k_map=[int(x) for x in rng.integers(0, 2**62, 16)],
                        q_map_rank=5, q_map=[int(x) for x in rng.integers(0, 2**62, 16)])
        launcher(0x5000 + call, [vals[n] for n in params.DECODE_PARAMS.names[:10]],
                 **{k: vals[k] for k in CHANGED})
        got = driver.calls[-1]
        assert got["raw"] == params.pack(params.DECODE_PARAMS, **vals).tobytes(), f"call {call}"
        assert (got["func"], got["grid"], got["block"], got["smem"], got["stream"]) == \
            (0xABC0, (2, 1, 66), 256, 232448, 0x5000 + call)


def test_launcher_reports_driver_errors(decode_launcher, monkeypatch):
    launcher, _, values = decode_launcher
    monkeypatch.setattr(launch, "_launch_kernel", lambda *a: 1)   # CUDA_ERROR_INVALID_VALUE
    with pytest.raises(RuntimeError, match="cuLaunchKernel failed with CUDA error 1"):
        launcher(0, [values[n] for n in params.DECODE_PARAMS.names[:10]], **{k: values[k] for k in CHANGED})


class FakeDriverEx:
    """Stands in for cuLaunchKernelEx: decodes the CUlaunchConfig and its attributes."""

    def __init__(self, nbytes):
        self.nbytes, self.calls = nbytes, []

    def __call__(self, config_ref, func, args, extra):
        cfg = ctypes.cast(config_ref, ctypes.POINTER(launch._LaunchConfig)).contents
        attrs = [(cfg.attrs[i].id, cfg.attrs[i].value) for i in range(cfg.numAttrs)]
        struct_addr = ctypes.cast(args, ctypes.POINTER(ctypes.c_void_p))[0]
        self.calls.append(dict(func=func.value, grid=(cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ),
                               block=(cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ), smem=cfg.sharedMemBytes,
                               stream=cfg.hStream, attrs=attrs, raw=ctypes.string_at(struct_addr, self.nbytes)))
        return 0


def test_overlapping_launcher_asks_for_programmatic_serialization(monkeypatch):
    """The C layout of CUlaunchConfig / CUlaunchAttribute (cuda.h), and what the launch carries."""
    assert ctypes.sizeof(launch._LaunchAttribute) == 72 and ctypes.sizeof(launch._LaunchConfig) == 56
    assert (launch._LaunchConfig.hStream.offset, launch._LaunchConfig.attrs.offset,
            launch._LaunchConfig.numAttrs.offset) == (32, 40, 48)
    values = sample_values(params.COMBINE_PARAMS)
    template = params.Prepacked(params.COMBINE_PARAMS, 5, **{k: values[k] for k in params.COMBINE_PARAMS.names[5:]})
    plain, ex = FakeDriver(params.COMBINE_PARAMS.itemsize), FakeDriverEx(params.COMBINE_PARAMS.itemsize)
    monkeypatch.setattr(launch, "_launch_kernel", plain)
    monkeypatch.setattr(launch, "_cupy_launch_kernel", False)
    monkeypatch.setattr(launch, "_launch_kernel_ex", ex)
    kernel = SimpleNamespace(kernel=SimpleNamespace(ptr=0xC0DE0))
    launcher = launch.Launcher(kernel, (16, 1, 4), (256,), 0, template, overlap_previous=True)
    for call in range(2):
        launcher(0x7000 + call, [values[n] for n in params.COMBINE_PARAMS.names[:5]])
        got = ex.calls[-1]
        assert got["raw"] == params.pack(params.COMBINE_PARAMS, **values).tobytes()
        assert (got["func"], got["grid"], got["block"], got["smem"], got["stream"]) == \
            (0xC0DE0, (16, 1, 4), (256, 1, 1), 0, 0x7000 + call)
        assert got["attrs"] == [(launch._CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, 1)]
    assert not plain.calls

    monkeypatch.setattr(launch, "_launch_kernel_ex", False)   # old driver: a plain launch
    launch.Launcher(kernel, (16, 1, 4), (256,), 0, template, overlap_previous=True)(
        0x7100, [values[n] for n in params.COMBINE_PARAMS.names[:5]])
    assert plain.calls[-1]["stream"] == 0x7100 and len(ex.calls) == 2


def test_run_packs_fields_only_when_they_change_and_mixes_with_call(decode_launcher):
    """Launcher.run (the API's path) against the full pack, alternating with __call__: each must
    see the buffer as the other left it."""
    launcher, driver, values = decode_launcher
    launcher.field_names = CHANGED
    rng = np.random.default_rng(2)
    k_maps = [[int(x) for x in rng.integers(0, 2**62, 16)] for _ in range(2)]
    plan = [("run", 0), ("run", 0), ("run", 1), ("call", 0), ("run", 0), ("run", 1), ("call", 1), ("call", 0),
            ("run", 0)]
    for i, (how, variant) in enumerate(plan):
        vals = dict(values)
        for n in params.DECODE_PARAMS.names[:10]:
            vals[n] = int(rng.integers(1, 2**47)) * 16
        vals.update(o_stride_b=4096 * (variant + 1), k_box_rows=32 * variant, k_map_rank=4 + variant,
                    k_map=k_maps[variant])
        ptrs = [vals[n] for n in params.DECODE_PARAMS.names[:10]]
        if how == "run":
            launcher.run(0x6000 + i, ptrs, tuple(vals[k] for k in CHANGED))
        else:
            launcher(0x6000 + i, ptrs, **{k: vals[k] for k in CHANGED})
        assert driver.calls[-1]["raw"] == params.pack(params.DECODE_PARAMS, **vals).tobytes(), f"call {i} ({how})"
        assert driver.calls[-1]["stream"] == 0x6000 + i


def test_launcher_takes_the_handle_of_its_device(monkeypatch):
    """CuPy answers a kernel's handle for the device current when asked; a Launcher for GPU 1
    made while GPU 0 is current must still hand the driver GPU 1's handle."""
    cupy = pytest.importorskip("cupy")
    current = [0]

    class FakeDevice:
        def __init__(self, i):
            self.i = i

        def __enter__(self):
            self.saved, current[0] = current[0], self.i

        def __exit__(self, *exc):
            current[0] = self.saved

    class PerDeviceKernel:   # like CuPy's: the function loaded for the current device
        @property
        def kernel(self):
            return SimpleNamespace(ptr=0x1000 + current[0])

    monkeypatch.setattr(cupy.cuda, "Device", FakeDevice)
    template = params.Prepacked(params.METADATA_PARAMS, 3, batch=1, num_parts=1)
    for device in (1, 0):
        launcher = launch.Launcher(PerDeviceKernel(), (1,), (32,), 0, template, device_id=device)
        assert launcher._fixed[0].value == launcher._cy_fixed[0] == 0x1000 + device
        assert current[0] == 0
    assert launch.Launcher(PerDeviceKernel(), (1,), (32,), 0, template)._cy_fixed[0] == 0x1000

"""Shared test set-up: tests marked `gpu` skip cleanly where no CUDA GPU is visible."""

import pytest


def _gpu_count() -> int:
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001 - no cupy, no driver, no device: all mean "no GPU"
        return 0


GPU_COUNT = _gpu_count()


def pytest_collection_modifyitems(config, items):
    if GPU_COUNT:
        return
    skip = pytest.mark.skip(reason="no CUDA GPU visible (cupy missing, no driver, or no device)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

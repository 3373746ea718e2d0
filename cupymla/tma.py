"""Tensor maps (CUtensorMap) for the Hopper kernel's copy engine, from the driver API.

CuPy does not wrap ``cuTensorMapEncodeTiled``; ``cuda-bindings`` (NVIDIA's own Python binding
of the driver API) does, so it is a dependency of the cuda12/cuda13 extras. Without it, or if
the driver refuses a layout, the API runs the portable kernel instead (api._DecodePlan.portable).
A map is a 128-byte value tied to one k_cache allocation and layout, so maps are cached by
(pointer, shape, strides, dtype): a decode step reuses the one made for the previous step.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from .arrays import BF16

_CACHE: OrderedDict = OrderedDict()
_LOCK = threading.Lock()
_CACHE_SIZE = 256          # maps kept; one per layer's cache in a typical engine
ZERO_MAP = [0] * 16


def box_rows_for(page_size: int) -> int:
    """Rows of one copy: a page, at most the kernel's 64-token tile. Page size 1 would need
    64 copies a tile slice: 0, and the API runs the portable kernel."""
    return min(page_size, 64) if page_size >= 16 else 0


def k_cache_map(k_cache, box_rows: int):
    """The map over k_cache [num_pages, page_size, h_kv, d] viewed as (d, h_kv, page_size, num_pages),
    box (64, 1, box_rows, 1), 128-byte swizzle; None if it cannot be made."""
    key = (k_cache.data.ptr, tuple(k_cache.shape), tuple(k_cache.strides), k_cache.dtype.str, box_rows,
           k_cache.device.id)
    with _LOCK:   # one thread per GPU may call at once
        found = _CACHE.get(key)
        if found is not None:
            _CACHE.move_to_end(key)
            return found
    made = _encode(k_cache, box_rows)
    if made is not None:
        with _LOCK:
            _CACHE[key] = made
            if len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return made


def _encode(k_cache, box_rows):
    try:
        from cuda.bindings import driver as cu
    except ImportError:
        return None
    num_pages, page_size, h_kv, d = (int(x) for x in k_cache.shape)
    sp, sr, sh, _ = (int(s) for s in k_cache.strides)
    dtype = (cu.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 if k_cache.dtype == BF16
             else cu.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_FLOAT16)
    u64, u32 = cu.cuuint64_t, cu.cuuint32_t
    try:
        err, tmap = cu.cuTensorMapEncodeTiled(
            dtype, 4, k_cache.data.ptr,
            [u64(d), u64(h_kv), u64(page_size), u64(num_pages)],
            [u64(sh), u64(sr), u64(sp)],
            [u32(64), u32(1), u32(box_rows), u32(1)],
            [u32(1)] * 4,
            cu.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE,
            cu.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_128B,
            cu.CUtensorMapL2promotion.CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            cu.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    except Exception:  # noqa: BLE001 - no driver library, an old binding: use the fallback
        return None
    if err != cu.CUresult.CUDA_SUCCESS:
        return None
    return [int(x) for x in tmap.opaque]

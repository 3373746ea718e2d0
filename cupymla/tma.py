"""Tensor maps (CUtensorMap) for the Hopper kernel's copy engine, from the driver API.

CuPy does not wrap ``cuTensorMapEncodeTiled``; ``cuda-bindings`` (NVIDIA's own Python binding
of the driver API) does, so it is a dependency of the cuda12/cuda13 extras. Without it, or if
the driver refuses a layout, the API runs the portable kernel instead (api._DecodePlan.portable).
A map is a 128-byte value tied to one k_cache allocation and layout, so maps are cached by
(pointer, shape, strides, dtype): a decode step reuses the one made for the previous step.

Two shapes of map (DecodeParams.k_map_rank in cuda_src/common/params.cuh): a 5-D view whose
single box is a page's rows of a tile in every 64-column slice, laid out slice by slice as the
kernels read them (its slice axis has a 128-byte stride, smaller than the row axis's: the copy
engine allows any order of strides), for pages of 64 tokens or more, and for pages of 32 where
the kernel accepts a tile stored as two sub-tiles (decode_sm90.cu); otherwise, or if the driver
refuses that view, the 4-D view with one box per slice and page.

decode_sm90_seesaw64.cu also copies q with the copy engine (q_map). q's pointer changes from call
to call, and a new map costs ~12 us of host time (bench/map_encode_cost.py), so that map is made
once per layout and does not depend on the pointer: its base is Q_MAP_BASE and its two outer
dimensions count 16-byte steps from there, so the kernel reaches any q by coordinates alone.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

from .arrays import BF16

_CACHE: OrderedDict = OrderedDict()
_LOCK = threading.Lock()
_CACHE_SIZE = 256          # maps kept; one per layer's cache in a typical engine
ZERO_MAP = [0] * 16
# CUPYMLA_L2_PROMOTION (bytes: 0, 64, 128, 256), for comparing: one L2 promotion for every k_cache map
# (k_cache_map; the q map keeps 256).
_PROMOTION_ENV = os.environ.get("CUPYMLA_L2_PROMOTION", "").strip()


def box_rows_for(page_size: int) -> int:
    """Rows of one copy: a page, at most the kernel's 64-token tile. Page size 1 would need
    64 copies a tile slice: 0, and the API runs the portable kernel."""
    return min(page_size, 64) if page_size >= 16 else 0


def k_cache_map(k_cache, box_rows: int, sub_tiles: bool = False, box_slices: int = 0, promotion: int = 256):
    """``(words, rank)``: the 16 words of a map over k_cache [num_pages, page_size, h_kv, d] and
    its rank (5 or 4, see the module docstring), 128-byte swizzle; None if it cannot be made.
    ``sub_tiles``: for pages of 32, the kernel reads tiles stored as two 32-row sub-tiles only
    (decode_sm90.cu compiled with MLA_KV_SUB_ROWS=32), so only the 5-D map will do.
    ``box_slices``: 64-column slices a 5-D box holds (0: all, d / 64; decode_sm90_seesaw64.cu asks
    for 1 and has no 4-D fallback). ``promotion``: the copies' L2 promotion in bytes (api._DecodePlan
    says which kernel streams faster with which)."""
    box_slices = box_slices or int(k_cache.shape[3]) // 64
    promotion = int(_PROMOTION_ENV) if _PROMOTION_ENV else promotion
    key = (k_cache.data.ptr, tuple(k_cache.shape), tuple(k_cache.strides), k_cache.dtype.str, box_rows,
           sub_tiles, box_slices, promotion, k_cache.device.id)
    return _cached(key, lambda: _encode(k_cache, box_rows, sub_tiles, box_slices, promotion))


# The q map's base address and its 16-byte-step dimensions: (steps from the base) = lo + 2^31 hi
# (coordinates are signed 32-bit), lo < 2^31 (32 GB), hi up to 2^49 bytes of address space.
Q_MAP_BASE = 16
Q_MAP_LO = 1 << 31
Q_MAP_HI = 1 << 14


def q_map(q, h_kv: int):
    """The 16 words of a map for q [b, s_q, h_q, d] of this layout wherever it lies
    (DecodeParams.q_map): (d, h_q / h_kv, s_q, lo, hi), 128-byte swizzle, based at Q_MAP_BASE,
    where lo (16 bytes a step) and hi (2^31 steps of lo) reach the (sequence, kv head) start;
    one box is one 64-column slice of a 64-row m tile. None where an m tile is no such box (h_q /
    h_kv neither a multiple nor a divisor of 64) or the driver refuses: the kernel then loads q
    with cp.async."""
    _, s_q, h_q, d = (int(x) for x in q.shape)
    hpk = h_q // h_kv
    if hpk % 64 and 64 % hpk:
        return None
    _, ss, sh, _ = (int(x) for x in q.strides)
    key = ("q", d, hpk, s_q, ss, sh, q.dtype.str)
    heads_box = min(hpk, 64)
    return _cached(key, lambda: _encode_tiled(q, [d, hpk, s_q, Q_MAP_LO, Q_MAP_HI], [sh, ss, 16, 16 * Q_MAP_LO],
                                              [64, heads_box, 64 // heads_box, 1, 1], base=Q_MAP_BASE))


def _cached(key, make):
    """make()'s result for key, made once (None, a failure, is not kept)."""
    with _LOCK:   # one thread per GPU may call at once
        found = _CACHE.get(key)
        if found is not None:
            _CACHE.move_to_end(key)
            return found
    made = make()
    if made is not None:
        with _LOCK:
            _CACHE[key] = made
            if len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return made


def _encode(k_cache, box_rows, sub_tiles, box_slices, promotion):
    num_pages, page_size, h_kv, d = (int(x) for x in k_cache.shape)
    sp, sr, sh, _ = (int(s) for s in k_cache.strides)
    if box_rows == 64 or (box_rows == 32 and sub_tiles):   # (64 columns, rows, slices, heads, pages)
        words = _encode_tiled(k_cache, [64, page_size, d // 64, h_kv, num_pages], [sr, 128, sh, sp],
                              [64, box_rows, box_slices, 1, 1], promotion=promotion)
        if words is not None:
            return words, 5
        if box_slices != d // 64:
            return None   # decode_sm90_seesaw64.cu reads slice boxes only: the host runs the portable kernel
        if sub_tiles and box_rows == 32:
            return None   # that kernel variant reads sub-tiles only: the host runs the portable one
    words = _encode_tiled(k_cache, [d, h_kv, page_size, num_pages], [sh, sr, sp], [64, 1, box_rows, 1],
                          promotion=promotion)
    return None if words is None else (words, 4)


def _encode_tiled(arr, dims, strides, box, base=None, promotion=256):
    """cuTensorMapEncodeTiled over arr's data (or from address ``base``), arr's dtype, 128-byte
    swizzle, zeros outside, L2 promotion of ``promotion`` bytes (0, 64, 128, 256); the map's 16
    words, or None."""
    try:
        from cuda.bindings import driver as cu
    except ImportError:
        return None
    dtype = (cu.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 if arr.dtype == BF16
             else cu.CUtensorMapDataType.CU_TENSOR_MAP_DATA_TYPE_FLOAT16)
    u64, u32 = cu.cuuint64_t, cu.cuuint32_t
    try:
        err, tmap = cu.cuTensorMapEncodeTiled(
            dtype, len(dims), arr.data.ptr if base is None else base,
            [u64(x) for x in dims], [u64(x) for x in strides], [u32(x) for x in box],
            [u32(1)] * len(dims),
            cu.CUtensorMapInterleave.CU_TENSOR_MAP_INTERLEAVE_NONE,
            cu.CUtensorMapSwizzle.CU_TENSOR_MAP_SWIZZLE_128B,
            getattr(cu.CUtensorMapL2promotion,
                    f"CU_TENSOR_MAP_L2_PROMOTION_L2_{promotion}B" if promotion else "CU_TENSOR_MAP_L2_PROMOTION_NONE"),
            cu.CUtensorMapFloatOOBfill.CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    except Exception:  # noqa: BLE001 - no driver library, an old binding: use the fallback
        return None
    if err != cu.CUresult.CUDA_SUCCESS:
        return None
    return [int(x) for x in tmap.opaque]

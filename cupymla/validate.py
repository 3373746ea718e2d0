"""Argument checks for the public API, run before anything is launched.

Every check takes arrays already viewed on the GPU but reads only their metadata (``shape``,
``dtype``, ``strides`` in bytes, ``device.id``, ``data.ptr``, ``flags``), so the tests can drive
them with stand-in objects on a machine without a GPU. Each error names the argument, what was
expected and what was given.
"""

from __future__ import annotations

import dataclasses
import numpy as np

from .arrays import BF16, FP16

HEAD_DIMS = (576, 512)
HEAD_DIM_V = 512
PAGE_SIZES = (1, 16, 32, 64, 128, 256)
MAX_BATCH = 65535          # the combine kernel's grid.y
METADATA_COLS = 8
_LOG2E = 1.4426950408889634


@dataclasses.dataclass(frozen=True)
class DecodeShape:
    batch: int
    s_q: int
    h_q: int
    head_dim: int
    h_kv: int
    page_size: int
    num_pages: int
    device: int
    dtype: np.dtype

    @property
    def rows(self) -> int:
        """Query rows that share one kv head."""
        return self.s_q * (self.h_q // self.h_kv)


def check_int(value, name, minimum=1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected >= {minimum}, got {value}")
    return int(value)


def check_int32(arr, name, ndim):
    if arr.dtype != np.int32:
        raise TypeError(f"{name}: expected dtype int32, got {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimension(s), got shape {tuple(arr.shape)}")


def check_device(arr, name, device_id):
    if arr.device.id != device_id:
        raise ValueError(f"{name}: expected an array on GPU {device_id} (where q is), got one on GPU {arr.device.id}")


def elem_strides(arr):
    return tuple(s // arr.itemsize for s in arr.strides)


def check_rows_16b(arr, name):
    """The kernels move rows in 16-byte pieces: contiguous last dim, aligned base and strides."""
    if arr.strides[-1] != arr.itemsize:
        raise ValueError(f"{name}: expected a contiguous last dimension, got strides {tuple(arr.strides)} (bytes)")
    if arr.data.ptr % 16 or any(s % 16 for s in arr.strides[:-1]):
        raise ValueError(f"{name}: expected a 16-byte aligned base address and strides that are multiples of "
                         f"16 bytes, got strides {tuple(arr.strides)} (bytes) and base {arr.data.ptr:#x}")


def check_seqlens(seqlens, batch=None):
    check_int32(seqlens, "cache_seqlens", 1)
    if batch is None:
        if not 1 <= seqlens.shape[0] <= MAX_BATCH:
            raise ValueError(f"cache_seqlens: expected 1 to {MAX_BATCH} sequences, got {seqlens.shape[0]}")
    elif seqlens.shape[0] != batch:
        raise ValueError(f"cache_seqlens: expected shape [{batch}] (the batch of q), got {tuple(seqlens.shape)}")
    if seqlens.strides[0] != 4:
        raise ValueError(f"cache_seqlens: expected a contiguous array, got strides {tuple(seqlens.strides)}")


def check_decode(q, k_cache, block_table, cache_seqlens, head_dim_v, softmax_scale, causal) -> tuple[DecodeShape, float]:
    """Check the inputs of flash_mla_with_kvcache; return their shape and the softmax scale."""
    if q.ndim != 4:
        raise ValueError(f"q: expected 4 dimensions [b, s_q, h_q, d], got shape {tuple(q.shape)}")
    if q.dtype not in (BF16, FP16):
        raise TypeError(f"q: expected dtype bfloat16 or float16, got {q.dtype}")
    b, s_q, h_q, d = (int(x) for x in q.shape)
    device = q.device.id
    if d not in HEAD_DIMS:
        raise ValueError(f"q: expected head dim (last dimension) in {HEAD_DIMS}, got {d}")
    if not 1 <= b <= MAX_BATCH:
        raise ValueError(f"q: expected a batch (dimension 0) of 1 to {MAX_BATCH}, got {b}")
    if s_q < 1 or h_q < 1:
        raise ValueError(f"q: expected s_q >= 1 and h_q >= 1, got shape {tuple(q.shape)}")
    check_rows_16b(q, "q")

    if k_cache.ndim != 4:
        raise ValueError(f"k_cache: expected 4 dimensions [num_blocks, page_size, h_kv, d], "
                         f"got shape {tuple(k_cache.shape)}")
    if k_cache.dtype != q.dtype:
        raise TypeError(f"k_cache: expected dtype {q.dtype} (the dtype of q), got {k_cache.dtype}")
    num_pages, page_size, h_kv, dk = (int(x) for x in k_cache.shape)
    if dk != d:
        raise ValueError(f"k_cache: expected head dim (last dimension) {d}, that of q, got {dk}")
    if page_size not in PAGE_SIZES:
        raise ValueError(f"k_cache: expected page size (dimension 1) in {PAGE_SIZES}, got {page_size}")
    if h_kv < 1 or h_q % h_kv:
        raise ValueError(f"k_cache: expected h_kv (dimension 2) dividing h_q = {h_q}, got {h_kv}")
    if num_pages < 1:
        raise ValueError("k_cache: expected at least one page (dimension 0), got 0")
    check_device(k_cache, "k_cache", device)
    check_rows_16b(k_cache, "k_cache")

    if isinstance(head_dim_v, bool) or not isinstance(head_dim_v, (int, np.integer)) or head_dim_v != HEAD_DIM_V:
        raise ValueError(f"head_dim_v: expected {HEAD_DIM_V}, got {head_dim_v!r}")

    check_int32(block_table, "block_table", 2)
    if block_table.shape[0] != b or block_table.shape[1] < 1:
        raise ValueError(f"block_table: expected shape [{b}, max_blocks >= 1], got {tuple(block_table.shape)}")
    if block_table.strides[1] != 4:
        raise ValueError(f"block_table: expected a contiguous last dimension, got strides {tuple(block_table.strides)}")
    check_device(block_table, "block_table", device)

    check_seqlens(cache_seqlens, b)
    check_device(cache_seqlens, "cache_seqlens", device)

    if softmax_scale is None:
        softmax_scale = d ** -0.5
    # The kernels take softmax_scale * log2(e) as a float32: it must stay finite and non-zero there.
    scale32 = None
    if not isinstance(softmax_scale, bool) and isinstance(softmax_scale, (int, float, np.floating, np.integer)):
        try:
            with np.errstate(over="ignore"):   # an overflow to inf is rejected just below
                scale32 = np.float32(float(softmax_scale) * _LOG2E)
        except (OverflowError, ValueError):
            scale32 = None
    if scale32 is None or not np.isfinite(scale32) or scale32 <= 0:
        raise ValueError(f"softmax_scale: expected a number > 0 whose float32 value times log2(e) is finite "
                         f"and non-zero, or None, got {softmax_scale!r}")
    if not isinstance(causal, (bool, np.bool_)):
        raise TypeError(f"causal: expected a bool, got {type(causal).__name__}")
    shape = DecodeShape(b, s_q, h_q, d, h_kv, page_size, num_pages, device, q.dtype)
    return shape, float(softmax_scale)


def check_schedule(sched, splits, shape: DecodeShape, num_parts: int):
    """The arrays of the classic convention must be the schedule of this very shape."""
    check_int32(sched, "tile_scheduler_metadata", 2)
    check_int32(splits, "num_splits", 1)
    if tuple(sched.shape) != (num_parts, METADATA_COLS) or not sched.flags.c_contiguous:
        raise ValueError(f"tile_scheduler_metadata: expected a contiguous [{num_parts}, {METADATA_COLS}] schedule "
                         f"for s_q*h_q/h_kv = {shape.rows}, h_kv = {shape.h_kv} on GPU {shape.device}, "
                         f"got shape {tuple(sched.shape)}: was it made for another shape?")
    if tuple(splits.shape) != (shape.batch + 1,) or splits.strides[0] != 4:
        raise ValueError(f"num_splits: expected a contiguous [{shape.batch + 1}] array (batch + 1), "
                         f"got shape {tuple(splits.shape)}: was it made for another batch?")
    check_device(sched, "tile_scheduler_metadata", shape.device)
    check_device(splits, "num_splits", shape.device)


def check_out(out, shape: DecodeShape):
    want = (shape.batch, shape.s_q, shape.h_q, HEAD_DIM_V)
    if tuple(out.shape) != want or out.dtype != shape.dtype:
        raise ValueError(f"out: expected shape {want} and dtype {shape.dtype}, got {tuple(out.shape)} {out.dtype}")
    check_device(out, "out", shape.device)
    check_rows_16b(out, "out")


def check_lse(lse, shape: DecodeShape):
    want = (shape.batch, shape.h_q, shape.s_q)
    if tuple(lse.shape) != want or lse.dtype != np.float32 or not lse.flags.c_contiguous:
        raise ValueError(f"lse: expected a contiguous float32 array of shape {want}, "
                         f"got {tuple(lse.shape)} {lse.dtype} (contiguous={bool(lse.flags.c_contiguous)})")
    check_device(lse, "lse", shape.device)

"""CPU tests of the argument checks (cupymla/validate.py) and of the API guards that run
before any GPU work.

The checks read only array metadata, so they are driven here with small stand-in objects
that have the attributes of a CuPy array (shape, ndim, dtype, strides in bytes, itemsize,
device.id, data.ptr, flags.c_contiguous). Every failure must raise the documented exception
type with a message that starts with the argument's name and names both what was expected
and what was given.
"""

import math
import re
from types import SimpleNamespace

import ml_dtypes
import numpy as np
import pytest

import cupymla
from cupymla import arrays, validate
from cupymla.validate import DecodeShape, check_decode, check_int, check_lse, check_out, check_schedule, check_seqlens

BF16 = np.dtype(ml_dtypes.bfloat16)
FP16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)
I32 = np.dtype(np.int32)
I64 = np.dtype(np.int64)


class Fake:
    """The metadata of a GPU array, nothing more."""

    def __init__(self, shape, dtype, strides=None, device=0, ptr=0x10000, c_contiguous=None):
        self.shape = tuple(int(s) for s in shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(dtype)
        self.itemsize = self.dtype.itemsize
        dense = []
        step = self.itemsize
        for n in reversed(self.shape):
            dense.insert(0, step)
            step *= max(n, 1)
        self.strides = tuple(dense) if strides is None else tuple(int(s) for s in strides)
        if c_contiguous is None:  # as CuPy: the strides of dimensions of size 1 do not matter
            c_contiguous = all(n == 1 or s == d for n, s, d in zip(self.shape, self.strides, dense))
        self.device = SimpleNamespace(id=device)
        self.data = SimpleNamespace(ptr=ptr)
        self.flags = SimpleNamespace(c_contiguous=c_contiguous)

    def __repr__(self):
        return f"Fake({self.shape}, {self.dtype}, strides={self.strides})"


def fake(shape, dtype, strides=None, device=0, ptr=0x10000, **kw):
    return Fake(shape, dtype, strides, device, ptr, **kw)


B, S_Q, H_Q, D, PAGE, H_KV, PAGES, MAXB = 2, 1, 16, 576, 64, 1, 10, 4


def valid_args(**changes):
    args = dict(
        q=fake((B, S_Q, H_Q, D), BF16),
        k_cache=fake((PAGES, PAGE, H_KV, D), BF16),
        block_table=fake((B, MAXB), I32),
        cache_seqlens=fake((B,), I32),
        head_dim_v=512,
        softmax_scale=None,
        causal=False,
    )
    args.update(changes)
    return args


def run_decode(**changes):
    return check_decode(**valid_args(**changes))


def expect(exc_type, name, fragments, fn, *args, **kwargs):
    """Call fn and check the exception's type, that it names `name` first, and mentions fragments."""
    with pytest.raises(exc_type, match=rf"^{re.escape(name)}:") as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    return msg


def the_shape(**changes):
    shape, _ = run_decode(**changes)
    return shape


# --------------------------------------------------------------------------- the valid case

def test_valid_arguments_pass():
    shape, scale = run_decode()
    assert shape == DecodeShape(batch=B, s_q=S_Q, h_q=H_Q, head_dim=D, h_kv=H_KV, page_size=PAGE,
                                num_pages=PAGES, device=0, dtype=BF16)
    assert shape.rows == S_Q * H_Q // H_KV
    assert isinstance(scale, float) and scale == pytest.approx(D ** -0.5)


@pytest.mark.parametrize("page", validate.PAGE_SIZES)
@pytest.mark.parametrize("dtype", [BF16, FP16])
def test_valid_variants(page, dtype):
    q = fake((3, 2, 128, 512), dtype)
    k = fake((7, page, 8, 512), dtype)
    shape, scale = run_decode(q=q, k_cache=k, block_table=fake((3, 1), I32), cache_seqlens=fake((3,), I32),
                              softmax_scale=np.float32(0.25), causal=np.bool_(True))
    assert (shape.batch, shape.s_q, shape.h_q, shape.head_dim, shape.h_kv, shape.page_size) == (3, 2, 128, 512, 8, page)
    assert shape.rows == 2 * 16
    assert shape.dtype == dtype
    assert scale == 0.25 and type(scale) is float


def test_valid_strided_inputs():
    # q sliced out of a bigger buffer on h and s; k_cache with padded pages; block_table a column slice.
    q = fake((2, 1, 16, 576), BF16, strides=(4 * 32 * 576 * 2, 32 * 576 * 2, 576 * 2, 2))
    k = fake((10, 64, 1, 576), BF16, strides=(80 * 576 * 2, 576 * 2, 576 * 2, 2))
    bt = fake((2, 4), I32, strides=(4 * 9, 4))
    shape, scale = run_decode(q=q, k_cache=k, block_table=bt, softmax_scale=1, causal=True)
    assert shape.batch == 2 and scale == 1.0
    assert validate.elem_strides(q) == (4 * 32 * 576, 32 * 576, 576, 1)


def test_head_dim_512_default_scale_and_max_batch():
    b = validate.MAX_BATCH
    shape, scale = run_decode(q=fake((b, 1, 16, 512), BF16), k_cache=fake((10, 64, 1, 512), BF16),
                              block_table=fake((b, 4), I32), cache_seqlens=fake((b,), I32))
    assert shape.batch == b and scale == pytest.approx(512 ** -0.5)


# --------------------------------------------------------------------------- q

@pytest.mark.parametrize("dtype", [F32, np.dtype(np.float64), I32, np.dtype(ml_dtypes.float8_e4m3fn)])
def test_q_dtype(dtype):
    expect(TypeError, "q", ["bfloat16 or float16", str(dtype)], run_decode, q=fake((B, S_Q, H_Q, D), dtype))


@pytest.mark.parametrize("shape", [(B, H_Q, D), (B, S_Q, H_Q, D, 1), (D,)])
def test_q_ndim(shape):
    expect(ValueError, "q", ["4 dimensions", str(shape)], run_decode, q=fake(shape, BF16))


@pytest.mark.parametrize("d", [128, 64, 575, 1024])
def test_q_head_dim(d):
    expect(ValueError, "q", ["(576, 512)", f"got {d}"], run_decode,
           q=fake((B, S_Q, H_Q, d), BF16), k_cache=fake((PAGES, PAGE, H_KV, d), BF16))


@pytest.mark.parametrize("b", [0, validate.MAX_BATCH + 1, 100000])
def test_q_batch_range(b):
    expect(ValueError, "q", ["1 to 65535", f"got {b}"], run_decode,
           q=fake((b, S_Q, H_Q, D), BF16), block_table=fake((max(b, 1), MAXB), I32),
           cache_seqlens=fake((max(b, 1),), I32))


@pytest.mark.parametrize("shape", [(B, 0, H_Q, D), (B, S_Q, 0, D)])
def test_q_empty_s_or_h(shape):
    expect(ValueError, "q", [">= 1", str(shape)], run_decode, q=fake(shape, BF16))


def test_q_last_dim_not_contiguous():
    strides = (S_Q * H_Q * D * 4, H_Q * D * 4, D * 4, 4)  # every other element
    expect(ValueError, "q", ["contiguous last dimension", str(strides)], run_decode,
           q=fake((B, S_Q, H_Q, D), BF16, strides=strides))


def test_q_misaligned_base():
    expect(ValueError, "q", ["16-byte aligned", "0x10008", "base"], run_decode,
           q=fake((B, S_Q, H_Q, D), BF16, ptr=0x10008))


def test_q_stride_not_multiple_of_16_bytes():
    strides = (S_Q * H_Q * 580 * 2, H_Q * 580 * 2, 580 * 2, 2)  # rows padded by 4 elements = 8 bytes
    expect(ValueError, "q", ["multiples of 16 bytes", str(strides)], run_decode,
           q=fake((B, S_Q, H_Q, D), BF16, strides=strides))


# --------------------------------------------------------------------------- k_cache

def test_k_cache_dtype_differs_from_q():
    expect(TypeError, "k_cache", ["bfloat16", "(the dtype of q)", "got float16"], run_decode,
           k_cache=fake((PAGES, PAGE, H_KV, D), FP16))
    expect(TypeError, "k_cache", ["float16", "got bfloat16"], run_decode,
           q=fake((B, S_Q, H_Q, D), FP16), k_cache=fake((PAGES, PAGE, H_KV, D), BF16))
    expect(TypeError, "k_cache", ["bfloat16", "got float32"], run_decode,
           k_cache=fake((PAGES, PAGE, H_KV, D), F32))


@pytest.mark.parametrize("shape", [(PAGES, PAGE, D), (PAGES * PAGE * H_KV * D,), (1, PAGES, PAGE, H_KV, D)])
def test_k_cache_ndim(shape):
    expect(ValueError, "k_cache", ["4 dimensions", str(shape)], run_decode, k_cache=fake(shape, BF16))


def test_k_cache_head_dim_differs_from_q():
    expect(ValueError, "k_cache", ["576", "that of q", "got 512"], run_decode,
           k_cache=fake((PAGES, PAGE, H_KV, 512), BF16))


@pytest.mark.parametrize("page", [8, 512, 2, 48, 0])
def test_k_cache_page_size(page):
    expect(ValueError, "k_cache", [str(validate.PAGE_SIZES), f"got {page}"], run_decode,
           k_cache=fake((PAGES, page, H_KV, D), BF16))


@pytest.mark.parametrize("h_kv", [3, 5, 32, 0])
def test_k_cache_h_kv_must_divide_h_q(h_kv):
    expect(ValueError, "k_cache", ["dividing h_q = 16", f"got {h_kv}"], run_decode,
           k_cache=fake((PAGES, PAGE, h_kv, D), BF16))


def test_k_cache_zero_pages():
    expect(ValueError, "k_cache", ["at least one page", "got 0"], run_decode, k_cache=fake((0, PAGE, H_KV, D), BF16))


def test_k_cache_other_device():
    expect(ValueError, "k_cache", ["GPU 0", "got one on GPU 1"], run_decode,
           k_cache=fake((PAGES, PAGE, H_KV, D), BF16, device=1))


def test_k_cache_not_contiguous_or_misaligned():
    k = (PAGES, PAGE, H_KV, D)
    strides = (PAGE * H_KV * D * 4, H_KV * D * 4, D * 4, 4)
    expect(ValueError, "k_cache", ["contiguous last dimension", str(strides)], run_decode,
           k_cache=fake(k, BF16, strides=strides))
    expect(ValueError, "k_cache", ["16-byte aligned", "0x10002"], run_decode, k_cache=fake(k, BF16, ptr=0x10002))
    strides = (PAGE * H_KV * 577 * 2, H_KV * 577 * 2, 577 * 2, 2)
    expect(ValueError, "k_cache", ["multiples of 16 bytes", str(strides)], run_decode,
           k_cache=fake(k, BF16, strides=strides))


# --------------------------------------------------------------------------- head_dim_v

@pytest.mark.parametrize("value", [576, 256, 0, -512, True, 512.0, "512", None, np.float32(512)])
def test_head_dim_v(value):
    expect(ValueError, "head_dim_v", ["expected 512", f"got {value!r}"], run_decode, head_dim_v=value)


def test_head_dim_v_numpy_int_ok():
    run_decode(head_dim_v=np.int64(512))


# --------------------------------------------------------------------------- block_table

@pytest.mark.parametrize("dtype", [I64, np.dtype(np.uint32), F32])
def test_block_table_dtype(dtype):
    expect(TypeError, "block_table", ["int32", f"got {dtype}"], run_decode, block_table=fake((B, MAXB), dtype))


@pytest.mark.parametrize("shape", [(B,), (B, MAXB, 1)])
def test_block_table_ndim(shape):
    expect(ValueError, "block_table", ["2 dimension", str(shape)], run_decode, block_table=fake(shape, I32))


@pytest.mark.parametrize("shape", [(B + 1, MAXB), (1, MAXB), (B, 0)])
def test_block_table_shape(shape):
    expect(ValueError, "block_table", [f"[{B}, max_blocks >= 1]", str(shape)], run_decode,
           block_table=fake(shape, I32))


def test_block_table_not_contiguous():
    strides = (MAXB * 8, 8)
    expect(ValueError, "block_table", ["contiguous last dimension", str(strides)], run_decode,
           block_table=fake((B, MAXB), I32, strides=strides))


def test_block_table_other_device():
    expect(ValueError, "block_table", ["GPU 0", "GPU 1"], run_decode, block_table=fake((B, MAXB), I32, device=1))


# --------------------------------------------------------------------------- cache_seqlens

@pytest.mark.parametrize("dtype", [I64, np.dtype(np.int16), F32])
def test_cache_seqlens_dtype(dtype):
    expect(TypeError, "cache_seqlens", ["int32", f"got {dtype}"], run_decode, cache_seqlens=fake((B,), dtype))


@pytest.mark.parametrize("shape", [(B, 1), ()])
def test_cache_seqlens_ndim(shape):
    expect(ValueError, "cache_seqlens", ["1 dimension", str(shape)], run_decode, cache_seqlens=fake(shape, I32))


@pytest.mark.parametrize("n", [B + 1, 1])
def test_cache_seqlens_batch(n):
    expect(ValueError, "cache_seqlens", [f"[{B}]", "batch of q", str((n,))], run_decode,
           cache_seqlens=fake((n,), I32))


def test_cache_seqlens_not_contiguous():
    expect(ValueError, "cache_seqlens", ["contiguous", "(8,)"], run_decode,
           cache_seqlens=fake((B,), I32, strides=(8,)))


def test_cache_seqlens_other_device():
    expect(ValueError, "cache_seqlens", ["GPU 0", "GPU 1"], run_decode, cache_seqlens=fake((B,), I32, device=1))


def test_check_seqlens_alone():
    check_seqlens(fake((1,), I32))
    check_seqlens(fake((validate.MAX_BATCH,), I32))
    for n in (0, validate.MAX_BATCH + 1):
        expect(ValueError, "cache_seqlens", ["1 to 65535", f"got {n}"], check_seqlens, fake((n,), I32))
    expect(TypeError, "cache_seqlens", ["int32", "int64"], check_seqlens, fake((3,), I64))
    expect(ValueError, "cache_seqlens", ["contiguous", "(12,)"], check_seqlens, fake((3,), I32, strides=(12,)))


def test_q_other_device_is_the_reference():
    # Everything else is compared with q's device: q on GPU 1 makes the others "on another GPU".
    expect(ValueError, "k_cache", ["expected an array on GPU 1", "got one on GPU 0"], run_decode,
           q=fake((B, S_Q, H_Q, D), BF16, device=1))
    shape, _ = run_decode(q=fake((B, S_Q, H_Q, D), BF16, device=1),
                          k_cache=fake((PAGES, PAGE, H_KV, D), BF16, device=1),
                          block_table=fake((B, MAXB), I32, device=1), cache_seqlens=fake((B,), I32, device=1))
    assert shape.device == 1


# --------------------------------------------------------------------------- softmax_scale, causal

@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf, True, False, "0.1",
                                   np.float32("nan"), np.float64(0.0), [0.1], complex(1, 0),
                                   1e39, 10**400, 1e-46])
def test_softmax_scale_rejected(value):
    expect(ValueError, "softmax_scale", ["number > 0", f"got {value!r}"], run_decode, softmax_scale=value)


@pytest.mark.parametrize("value, want", [(None, D ** -0.5), (1, 1.0), (0.5, 0.5), (np.float16(2), 2.0),
                                         (np.int32(3), 3.0), (1e-3, 1e-3)])
def test_softmax_scale_accepted(value, want):
    _, scale = run_decode(softmax_scale=value)
    assert type(scale) is float and scale == pytest.approx(want)


@pytest.mark.parametrize("value", [1, 0, "yes", None, 1.0, np.int32(1)])
def test_causal_not_bool(value):
    expect(TypeError, "causal", ["a bool", f"got {type(value).__name__}"], run_decode, causal=value)


# --------------------------------------------------------------------------- check_schedule

def schedule_args(num_parts=6, **changes):
    shape = the_shape()
    args = dict(sched=fake((num_parts, 8), I32), splits=fake((B + 1,), I32), shape=shape, num_parts=num_parts)
    args.update(changes)
    return args


def test_schedule_valid():
    check_schedule(**schedule_args())


@pytest.mark.parametrize("shape", [(7, 8), (5, 8), (6, 5), (6, 16)])
def test_schedule_shape_mismatch(shape):
    msg = expect(ValueError, "tile_scheduler_metadata", ["[6, 8]", f"got shape {shape}", "another shape"],
                 check_schedule, **schedule_args(sched=fake(shape, I32)))
    assert "s_q*h_q/h_kv = 16" in msg and "h_kv = 1" in msg


def test_schedule_not_contiguous():
    expect(ValueError, "tile_scheduler_metadata", ["contiguous [6, 8]"], check_schedule,
           **schedule_args(sched=fake((6, 8), I32, strides=(64, 4))))


def test_schedule_dtype_and_ndim():
    expect(TypeError, "tile_scheduler_metadata", ["int32", "got int64"], check_schedule,
           **schedule_args(sched=fake((6, 8), I64)))
    expect(ValueError, "tile_scheduler_metadata", ["2 dimension", "(48,)"], check_schedule,
           **schedule_args(sched=fake((48,), I32)))
    expect(TypeError, "num_splits", ["int32", "got int64"], check_schedule, **schedule_args(splits=fake((B + 1,), I64)))
    expect(ValueError, "num_splits", ["1 dimension", "(3, 1)"], check_schedule,
           **schedule_args(splits=fake((B + 1, 1), I32)))


@pytest.mark.parametrize("n", [B, B + 2, 1])
def test_num_splits_length(n):
    expect(ValueError, "num_splits", [f"[{B + 1}]", "batch + 1", f"got shape {(n,)}"], check_schedule,
           **schedule_args(splits=fake((n,), I32)))


def test_num_splits_not_contiguous():
    expect(ValueError, "num_splits", ["contiguous"], check_schedule,
           **schedule_args(splits=fake((B + 1,), I32, strides=(8,))))


def test_schedule_other_device():
    expect(ValueError, "tile_scheduler_metadata", ["GPU 0", "GPU 1"], check_schedule,
           **schedule_args(sched=fake((6, 8), I32, device=1)))
    expect(ValueError, "num_splits", ["GPU 0", "GPU 1"], check_schedule,
           **schedule_args(splits=fake((B + 1,), I32, device=1)))


# --------------------------------------------------------------------------- out, lse

OUT = (B, S_Q, H_Q, 512)
LSE = (B, H_Q, S_Q)


def test_out_and_lse_valid():
    shape = the_shape()
    check_out(fake(OUT, BF16), shape)
    check_lse(fake(LSE, F32), shape)
    # out may be strided (e.g. a slice of a bigger buffer) as long as rows are 16-byte aligned
    check_out(fake(OUT, BF16, strides=(S_Q * H_Q * 1024 * 2, H_Q * 1024 * 2, 1024 * 2, 2)), shape)


@pytest.mark.parametrize("shape, dtype", [((B, S_Q, H_Q, 576), BF16), ((B, H_Q, S_Q, 512), BF16),
                                          ((B, S_Q, H_Q), BF16), (OUT, FP16), (OUT, F32)])
def test_out_mismatch(shape, dtype):
    expect(ValueError, "out", [str(OUT), "bfloat16", f"got {shape} {dtype}"], check_out, fake(shape, dtype),
           the_shape())


def test_out_device_contiguity_alignment():
    shape = the_shape()
    expect(ValueError, "out", ["GPU 0", "GPU 1"], check_out, fake(OUT, BF16, device=1), shape)
    strides = (S_Q * H_Q * 512 * 4, H_Q * 512 * 4, 512 * 4, 4)
    expect(ValueError, "out", ["contiguous last dimension", str(strides)], check_out,
           fake(OUT, BF16, strides=strides), shape)
    expect(ValueError, "out", ["16-byte aligned", "0x10004"], check_out, fake(OUT, BF16, ptr=0x10004), shape)
    strides = (S_Q * H_Q * 516 * 2, H_Q * 516 * 2, 516 * 2, 2)
    expect(ValueError, "out", ["multiples of 16 bytes", str(strides)], check_out,
           fake(OUT, BF16, strides=strides), shape)


@pytest.mark.parametrize("shape, dtype", [(LSE, FP16), (LSE, np.dtype(np.float64)), ((B, S_Q, H_Q), F32),
                                          ((B, H_Q), F32), ((B + 1, H_Q, S_Q), F32)])
def test_lse_mismatch(shape, dtype):
    expect(ValueError, "lse", ["contiguous float32", str(LSE), f"got {shape} {dtype}"], check_lse,
           fake(shape, dtype), the_shape())


def test_lse_not_contiguous_and_device():
    shape = the_shape()
    expect(ValueError, "lse", [str(LSE), "contiguous=False"], check_lse,
           fake(LSE, F32, strides=(H_Q * S_Q * 8, S_Q * 8, 8)), shape)
    expect(ValueError, "lse", ["GPU 0", "GPU 1"], check_lse, fake(LSE, F32, device=1), shape)


# --------------------------------------------------------------------------- check_int

@pytest.mark.parametrize("value", [True, False, 1.0, 4.5, "4", None, np.float64(2), np.bool_(True)])
def test_check_int_type(value):
    expect(TypeError, "num_heads_k", ["an int", f"got {type(value).__name__}"], check_int, value, "num_heads_k")


@pytest.mark.parametrize("value", [0, -1, np.int32(0)])
def test_check_int_range(value):
    expect(ValueError, "num_heads_k", [">= 1", f"got {value}"], check_int, value, "num_heads_k")


def test_check_int_ok():
    assert check_int(3, "x") == 3
    out = check_int(np.int64(7), "x")
    assert out == 7 and type(out) is int
    assert check_int(0, "x", minimum=0) == 0
    expect(ValueError, "x", [">= 2", "got 1"], check_int, 1, "x", minimum=2)


# --------------------------------------------------------------------------- the API guards (no GPU needed)

class DLPackOn:
    """A DLPack producer that lives on DLPack device type `dev_type`."""

    def __init__(self, dev_type):
        self.dev_type = dev_type

    def __dlpack__(self, *args, **kwargs):
        raise RuntimeError("producer refused")

    def __dlpack_device__(self):
        return (self.dev_type, 0)


def api_args(**changes):
    q = np.zeros((B, S_Q, H_Q, D), BF16)
    args = dict(q=q, k_cache=np.zeros((PAGES, PAGE, H_KV, D), BF16), block_table=np.zeros((B, MAXB), np.int32),
                cache_seqlens=np.zeros((B,), np.int32), head_dim_v=512, tile_scheduler_metadata=None,
                num_splits=None)
    args.update(changes)
    return args


def test_api_numpy_q_is_a_cpu_array():
    pytest.importorskip("cupy")
    expect(TypeError, "q", ["CUDA GPU", "NumPy array (CPU)", "cupymla.reference"],
           cupymla.flash_mla_with_kvcache, **api_args())


@pytest.mark.parametrize("dev_type", [1, 3])
def test_api_cpu_dlpack_q(dev_type):
    pytest.importorskip("cupy")
    expect(TypeError, "q", ["CUDA GPU", f"device type {dev_type}", "(CPU)"], cupymla.flash_mla_with_kvcache,
           **api_args(q=DLPackOn(dev_type)))


def test_api_non_cuda_dlpack_q():
    pytest.importorskip("cupy")
    expect(TypeError, "q", ["device type 10", "not CUDA"], cupymla.flash_mla_with_kvcache,
           **api_args(q=DLPackOn(10)))


def test_api_q_without_dlpack():
    pytest.importorskip("cupy")
    expect(TypeError, "q", ["GPU array", "builtins.list"], cupymla.flash_mla_with_kvcache, **api_args(q=[[1.0]]))


@pytest.mark.parametrize("name", ["k_cache", "block_table", "cache_seqlens", "out", "lse", "num_splits"])
def test_as_cupy_names_the_argument(name):
    pytest.importorskip("cupy")
    expect(TypeError, name, ["NumPy array (CPU)"], arrays.as_cupy, np.zeros(3), name)
    expect(TypeError, name, ["(CPU)"], arrays.as_cupy, DLPackOn(1), name)
    expect(TypeError, name, ["GPU array", "builtins.object"], arrays.as_cupy, object(), name)


def test_as_cupy_producer_failure_is_a_type_error():
    # A CUDA-resident producer that cannot be viewed (here: no GPU or the producer refuses).
    pytest.importorskip("cupy")
    expect(TypeError, "k_cache", ["could not be viewed through DLPack"], arrays.as_cupy, DLPackOn(2), "k_cache")


@pytest.mark.parametrize("changes", [dict(is_fp8_kvcache=True), dict(indices=np.zeros((B, S_Q, 64), np.int32)),
                                     dict(attn_sink=np.zeros(H_Q, np.float32)),
                                     dict(topk_length=np.zeros(B, np.int32))])
def test_api_unimplemented_modes(changes):
    with pytest.raises(NotImplementedError):
        cupymla.flash_mla_with_kvcache(**api_args(**changes))
    # checked before the arrays are even looked at
    with pytest.raises(NotImplementedError):
        cupymla.flash_mla_with_kvcache(None, None, None, None, 512, None, **changes)


def test_get_mla_metadata_current_convention():
    meta, num_splits = cupymla.get_mla_metadata()
    assert isinstance(meta, cupymla.MLAMetadata) and num_splits is None
    assert meta.key is None and meta.tile_scheduler_metadata is None and meta.num_splits is None
    assert "empty" in repr(meta)
    other, _ = cupymla.get_mla_metadata()
    assert other is not meta


def test_get_mla_metadata_guards():
    seqlens = np.array([10, 20], np.int32)
    with pytest.raises(ValueError, match="cache_seqlens"):
        cupymla.get_mla_metadata(None, 4, 1)
    with pytest.raises(ValueError, match="cache_seqlens"):
        cupymla.get_mla_metadata(None, None, 1)
    expect(ValueError, "num_q_tokens_per_head_k", [">= 1", "got 0"], cupymla.get_mla_metadata, seqlens, 0, 1)
    expect(TypeError, "num_heads_k", ["an int", "got bool"], cupymla.get_mla_metadata, seqlens, 4, True)
    expect(TypeError, "num_q_tokens_per_head_k", ["an int", "got float"], cupymla.get_mla_metadata, seqlens, 4.0, 1)
    expect(ValueError, "num_heads_k", [">= 1", "got -1"], cupymla.get_mla_metadata, seqlens, 4, -1)
    with pytest.raises(NotImplementedError):
        cupymla.get_mla_metadata(seqlens, 4, 1, is_fp8_kvcache=True)
    with pytest.raises(NotImplementedError):
        cupymla.get_mla_metadata(seqlens, 4, 1, topk=2048)


def test_get_mla_metadata_numpy_seqlens():
    pytest.importorskip("cupy")
    expect(TypeError, "cache_seqlens", ["NumPy array (CPU)"], cupymla.get_mla_metadata,
           np.array([10, 20], np.int32), 16, 1)

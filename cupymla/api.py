"""The public API, FlashMLA-compatible: validate -> plan -> launch.

``get_mla_metadata`` runs the scheduler kernel (metadata.cu) on the GPU; ``flash_mla_with_kvcache``
runs the decode kernel and, for sequences the scheduler split across parts, the combine kernel.
Everything is checked before anything is launched, and nothing here synchronises with the host,
so a decode step can be captured in a CUDA graph.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import threading

import numpy as np

from . import arrays, kernels, launch, params, tma, validate
from .arrays import FP16
from .validate import HEAD_DIM_V, METADATA_COLS

_LOG2E = 1.4426950408889634
_F32 = np.dtype(np.float32)


class MLAMetadata:
    """Schedule of the current FlashMLA convention: ``get_mla_metadata()`` returns an empty one,
    the first ``flash_mla_with_kvcache`` call that gets it fills it, and later calls with the same
    shapes (e.g. the other layers of a decode step) reuse it, as with FlashMLA."""

    def __init__(self):
        self.tile_scheduler_metadata = None
        self.num_splits = None
        self.key = None  # (device, batch, rows per kv head, h_kv) it was made for

    def __repr__(self):
        state = "empty" if self.key is None else f"device={self.key[0]} batch={self.key[1]} rows={self.key[2]} h_kv={self.key[3]}"
        return f"MLAMetadata({state})"


# --------------------------------------------------------------------------- helpers

def _plan(device_id: int, rows: int, h_kv: int, head_dim: int = 576):
    """Decode kernel configuration and number of scheduler parts for this device and head layout.

    The part count comes from the d = 576 variant whatever ``head_dim`` is: get_mla_metadata
    cannot know the head dim, and its schedule must fit the decode call that uses it.
    """
    info = kernels.device_info(device_id)
    cfg = kernels.decode_config(rows, info["cc"], head_dim)
    sizing = kernels.decode_config(rows, info["cc"], 576)
    # The very build a bf16 call launches (MLA_ACC16 included), so that a first call compiles once.
    fn = kernels.get_function(device_id, sizing.file, {"MLA_FP16": 0, **_acc16_defines(_partials_16bit(sizing)),
                                                       **sizing.defines()}, sizing.smem_bytes)
    per_sm = kernels.ctas_per_sm(sizing, info["smem_per_sm"], fn.num_regs)
    m_tiles = -(-rows // cfg.block_m)
    num_parts = max(info["sms"] * per_sm // (h_kv * m_tiles), 1)
    return cfg, num_parts


def _partials_16bit(cfg) -> bool:
    """Whether a plan whose kernel is `cfg` stores split sequences' partial results in the element
    type instead of fp32 (MLA_ACC16): on the seesaw kernels, unless CUPYMLA_PARTIALS=fp32. The
    output's error grows by a third to a half (bench/acc_error.py; README, "Supported GPUs and
    dtypes")."""
    if os.environ.get("CUPYMLA_PARTIALS", "").strip().lower() == "fp32":
        return False
    return cfg.partials_16bit


def _acc16_defines(on: bool) -> dict:
    """MLA_ACC16 for every kernel of a plan whose partials are 16-bit; nothing otherwise (the
    builds, and their cache keys, of the fp32 partials stay as they were)."""
    return {"MLA_ACC16": 1} if on else {}


def _combine_shape(num_parts: int, batch: int, tasks: int, sms: int):
    """combine.cu's shape for a call: (defines, grid, block). A sequence has about num_parts /
    batch pieces. Many (a short batch split over every SM) take the wide shape, a CTA's 8 warps
    sharing one row's pieces; its CTAs hold 256 of the 512 columns (half the CTAs of 128-column
    ones, fewer waves of them once the decode ends: H200 b4 s_q4 -4%, b8 -1.3%) unless the
    grid would then not fill the SMs (b1: 16 rows; bench/NOTES.md, session 12). `tasks`: rows of
    all kv heads of a sequence."""
    if num_parts > 16 * batch:
        cols = 256 if 2 * tasks * batch >= sms else 128
        cols = int(kernels.extra_defines("combine.cu").get("MLA_COMBINE_COLS", cols))   # for comparing
        return {"MLA_COMBINE_WIDE": 1, "MLA_COMBINE_COLS": cols}, (tasks, batch, 512 // cols), (256,)
    return {"MLA_COMBINE_WIDE": 0}, (-(-tasks // 4), batch, 1), (128,)


def _runs_portable(cfg, page_size: int) -> bool:
    """The Hopper kernel loads the cache through the copy engine only; page size 1 would need 64
    copies per tile slice, so that layout takes the portable kernel (same schedule)."""
    return cfg.path == "sm90" and not tma.box_rows_for(page_size)


_SEESAW64_PAGES32 = os.environ.get("CUPYMLA_SEESAW64_P32", "1").strip() != "0"


def _for_page(cfg, page_size: int):
    """The configuration run for pages of `page_size` (same schedule: one m tile per kv head, as
    many parts). The 64-token seesaw copies a tile from one page, or from two on pages of 32
    (two 32-row boxes a slice; CUPYMLA_SEESAW64_P32=0, for comparing, gives those pages the
    32-token seesaw as before); smaller pages take the 32-token seesaw, which copies a 32-token
    tile in one box, and pages of 16 take decode_sm90.cu instead.
    The 32-row narrow kernel needs 18 small copies a 64-token tile on pages of 32, and ran 16%
    slower there than on pages of 64 (H200, 204 against 176 us on b64 h_q32 8K); the 32-token
    seesaw, as fast as it on pages of 64, takes those pages."""
    if cfg.is_seesaw64 and page_size < (32 if _SEESAW64_PAGES32 else 64):
        cfg = dataclasses.replace(cfg, block_n=32, stages=4, variant="")
    if cfg.is_seesaw and page_size < 32:
        return dataclasses.replace(cfg, block_n=64, stages=2)
    if cfg.path == "sm90" and cfg.block_m == 32 and page_size == 32:
        seesaw = _for_page(kernels.decode_config(64, kernels.SM90, cfg.head_dim), page_size)
        return seesaw if seesaw.is_seesaw else cfg
    return cfg


def launched_file(cfg, page_size: int) -> str:
    """The kernel source a plan with `cfg` runs for pages of `page_size` (`check` reports it)."""
    return "decode_sm80.cu" if _runs_portable(cfg, page_size) else _for_page(cfg, page_size).file


def _launch_metadata(seqlens, device_id, num_parts, stream):
    cp = arrays.cupy_module()
    batch = seqlens.shape[0]
    with arrays.on(device_id, stream):
        sched = cp.empty((num_parts, METADATA_COLS), dtype=np.int32)
        num_splits = cp.empty((batch + 1,), dtype=np.int32)
        fn = kernels.get_function(device_id, "metadata.cu", kernels.extra_defines("metadata.cu") or None)
        p = params.pack(params.METADATA_PARAMS, seqlens=seqlens.data.ptr, sched=sched.data.ptr,
                        num_splits=num_splits.data.ptr, batch=batch, num_parts=num_parts)
        fn((1,), (32,), (p,), stream=stream)
    return sched, num_splits


# --------------------------------------------------------------------------- get_mla_metadata

def get_mla_metadata(cache_seqlens=None, num_q_tokens_per_head_k=None, num_heads_k=None, *,
                     num_heads_q=None, is_fp8_kvcache=False, topk=None):
    """Schedule a decode step. Two conventions, as FlashMLA:

    * ``get_mla_metadata(cache_seqlens, s_q * h_q // h_kv, h_kv)`` computes it now and returns
      ``(tile_scheduler_metadata, num_splits)``: int32 arrays ``[num_parts, 8]`` and ``[b + 1]``
      in the framework of ``cache_seqlens``.
    * ``get_mla_metadata()`` returns ``(MLAMetadata(), None)``, filled by the first decode call.
    """
    if is_fp8_kvcache or topk is not None:
        raise NotImplementedError("get_mla_metadata: FP8 KV cache and sparse (topk) decode are not implemented yet")
    if cache_seqlens is None:
        if num_q_tokens_per_head_k is not None or num_heads_k is not None:
            raise ValueError("get_mla_metadata: cache_seqlens is required when the head counts are given")
        return MLAMetadata(), None
    rows = validate.check_int(num_q_tokens_per_head_k, "num_q_tokens_per_head_k")
    h_kv = validate.check_int(num_heads_k, "num_heads_k")
    seqlens = arrays.as_cupy(cache_seqlens, "cache_seqlens")
    validate.check_seqlens(seqlens)
    device_id = seqlens.device.id
    _, num_parts = _plan(device_id, rows, h_kv)
    stream = arrays.stream_for(cache_seqlens, device_id)
    sched, num_splits = _launch_metadata(seqlens, device_id, num_parts, stream)
    fw = arrays.framework_of(cache_seqlens)
    return arrays.to_framework(sched, fw), arrays.to_framework(num_splits, fw)


# --------------------------------------------------------------------------- flash_mla_with_kvcache

def flash_mla_with_kvcache(q, k_cache, block_table, cache_seqlens, head_dim_v,
                           tile_scheduler_metadata, num_splits=None, softmax_scale=None, causal=False,
                           is_fp8_kvcache=False, indices=None, attn_sink=None, topk_length=None,
                           *, out=None, lse=None):
    """Paged MLA decode. Returns ``(out [b, s_q, h_q, head_dim_v], lse float32 [b, h_q, s_q])``
    in the framework of ``q``; see README.md for the full contract."""
    if is_fp8_kvcache:
        raise NotImplementedError("is_fp8_kvcache: the FP8 KV cache is not implemented yet")
    if indices is not None or attn_sink is not None or topk_length is not None:
        raise NotImplementedError("indices/attn_sink/topk_length: sparse decode is not implemented yet")

    # This function runs once per layer and step: it is written for few attribute lookups and
    # calls (bench/host_python_only.py measures it without a GPU, bench/host_breakdown.py with one).
    view = arrays.view
    qc = view(q, "q")
    kc = view(k_cache, "k_cache")
    bt = view(block_table, "block_table")
    sl = view(cache_seqlens, "cache_seqlens")
    classic = not isinstance(tile_scheduler_metadata, MLAMetadata)
    if classic:
        if tile_scheduler_metadata is None or num_splits is None:
            raise TypeError("tile_scheduler_metadata: expected the pair from get_mla_metadata(...), "
                            "or an MLAMetadata from get_mla_metadata() with num_splits None")
        sched = view(tile_scheduler_metadata, "tile_scheduler_metadata")
        splits = view(num_splits, "num_splits")
        sched_sig = (sched.shape, sched.strides, sched.dtype, sched.data.device_id,
                     splits.shape, splits.strides, splits.dtype, splits.data.device_id)
    else:
        sched_sig = None
    # Everything validation looks at but the pointers: a hit means these inputs passed before.
    key = _plan_key(qc, kc, bt, sl, sched_sig, head_dim_v, softmax_scale, causal)
    plan = _PLANS.get(key)
    q_ptr, k_ptr = qc.data.ptr, kc.data.ptr
    if plan is None:
        shape, scale = validate.check_decode(qc, kc, bt, sl, head_dim_v, softmax_scale, causal)
        plan = _DecodePlan(shape, scale, bool(causal), qc, kc, bt)
        if classic:
            validate.check_schedule(sched, splits, shape, plan.num_parts)
        with _plans_lock:   # serving engines call from one thread per GPU
            _PLANS[key] = plan
            if len(_PLANS) > _MAX_PLANS:
                _PLANS.pop(next(iter(_PLANS)))
    elif q_ptr % 16 or k_ptr % 16:   # only a new pointer can be misaligned now
        validate.check_rows_16b(qc, "q")
        validate.check_rows_16b(kc, "k_cache")
    shape = plan.shape
    device_id = shape.device
    cp = arrays.cupy_module()
    if qc is q:   # a CuPy array: CuPy's current stream, results in CuPy
        fw = "cupy"
        stream = cp.cuda.get_current_stream(device_id)
    else:
        fw = arrays.framework_of(q)
        stream = arrays.stream_for(q, device_id)

    # The schedule of the current convention: made by the first call that gets it.
    if not classic:
        b, rows, h_kv = shape.batch, shape.rows, shape.h_kv
        meta = tile_scheduler_metadata
        meta_key = (device_id, b, rows, h_kv)
        if meta.key is None:
            meta.tile_scheduler_metadata, meta.num_splits = _launch_metadata(
                arrays.as_cupy(cache_seqlens, "cache_seqlens"), device_id, plan.num_parts, stream)
            meta.key = meta_key
        elif meta.key != meta_key:
            raise ValueError(f"tile_scheduler_metadata: made for (device, batch, s_q*h_q/h_kv, h_kv) = {meta.key}, "
                             f"used with {meta_key}; use one MLAMetadata per shape")
        sched, splits = meta.tile_scheduler_metadata, meta.num_splits

    # The Hopper kernel loads the cache with the copy engine: a tensor map per cache allocation.
    decode, box_rows, k_map, k_rank = plan.decode, plan.box_rows, tma.ZERO_MAP, 0
    if box_rows:
        last_k, made = plan.last_k_map   # one (pointer, map) tuple: swapped whole, so thread-safe
        if last_k != k_ptr:
            made = tma.k_cache_map(kc, box_rows, plan.sub_tiles, plan.box_slices, plan.l2_promotion)
            plan.last_k_map = (k_ptr, made)
        if made is None:   # no cuda-bindings, or the driver refused this layout
            decode, box_rows = plan.portable(), 0
        else:
            k_map, k_rank = made

    # The device of the arrays current while allocating and launching (free when it already is).
    switch = cp.cuda.runtime.getDevice() != device_id
    if switch:
        device_ctx = cp.cuda.Device(device_id)
        device_ctx.__enter__()
    try:
        # Outputs, in q's framework unless the caller brought buffers.
        if out is None:
            os_ = plan.out_strides
            if lse is None and fw == "cupy":   # one allocation, two views (plan.new_outputs)
                out_obj, lse_obj = out_v, lse_v = plan.new_outputs(cp)
            else:
                out_obj, out_v = arrays.empty_like_framework(q, plan.out_shape, shape.dtype, device_id, True)
        else:
            out_obj, out_v = out, view(out, "out")
            os_ = plan.checked_out(out_v)
        if lse is not None:
            lse_obj, lse_v = lse, view(lse, "lse")
            plan.check_lse(lse_v)
        elif out is not None or fw != "cupy":
            lse_obj, lse_v = arrays.empty_like_framework(q, plan.lse_shape, _F32, device_id, True)

        oa_ptr, la_ptr = plan.scratch_ptrs(stream, q)
        plan.launch(stream, decode, (q_ptr, k_ptr, bt.data.ptr, sl.data.ptr, sched.data.ptr, splits.data.ptr,
                                     out_v.data.ptr, lse_v.data.ptr, oa_ptr, la_ptr),
                    os_, (os_[0], os_[1], os_[2], box_rows, k_rank, k_map))
    finally:
        if switch:
            device_ctx.__exit__(None, None, None)

    if fw == "jax":
        out_obj = arrays.to_framework(out_v, fw) if out is None else out_obj
        lse_obj = arrays.to_framework(lse_v, fw) if lse is None else lse_obj
    return out_obj, lse_obj


def _is_capturing(stream_ptr) -> bool:
    """Whether the caller's stream is being captured into a graph (cudaStreamIsCapturing). An
    error (e.g. the legacy stream while another thread captures in global mode) counts as yes:
    the call then launches directly, as it always did."""
    try:
        return bool(arrays.cupy_module().cuda.runtime.streamIsCapturing(stream_ptr))
    except Exception:  # noqa: BLE001
        return True


def _signature(v):
    return (v.shape, v.strides, v.dtype, v.data.device_id)


def _plan_key(qc, kc, bt, sl, sched_sig, head_dim_v, softmax_scale, causal):
    """The plan cache's key: the four arrays' _signature()s, flat (one tuple, no calls), the
    schedule's, and the scalar arguments with their types."""
    return (qc.shape, qc.strides, qc.dtype, qc.data.device_id, kc.shape, kc.strides, kc.dtype, kc.data.device_id,
            bt.shape, bt.strides, bt.dtype, bt.data.device_id, sl.shape, sl.strides, sl.dtype, sl.data.device_id,
            sched_sig, head_dim_v, softmax_scale, causal, type(softmax_scale), type(causal), type(head_dim_v))


_PLANS: dict = {}
_MAX_PLANS = 64
_plans_lock = threading.Lock()

# The replay cache (see _DecodePlan.launch). CUPYMLA_REPLAY=0 turns it off; read once here, and
# tests or benchmarks may set api._REPLAY (read per call: one global lookup).
_REPLAY = os.environ.get("CUPYMLA_REPLAY", "1").strip().lower() not in ("0", "false", "off", "no")
# Graphs kept per plan (least recently used dropped), enough for a model's layers cycling through
# one plan (a key per layer's k_cache, times the alternating pointers of fresh outputs); a plan
# that drops more than that many graphs (a working set larger than the cache: every graph would
# be captured again and again, ~50 us each) stops replaying.
_GRAPHS_PER_PLAN = 64
_SEEN_PER_PLAN = 256   # keys seen once (no graph yet) remembered per plan
_DECODE_FIELDS = ("o_stride_b", "o_stride_s", "o_stride_h", "k_box_rows", "k_map_rank", "k_map")
_COMBINE_FIELDS = ("o_stride_b", "o_stride_s", "o_stride_h")


class _DecodePlan:
    """What one input layout needs, worked out once: kernels, grid, the parameter structs with
    their per-shape fields packed, and split-KV scratch buffers per stream (reused: work on one
    stream runs in order, and a captured CUDA graph keeps pointing at live memory)."""

    def __init__(self, shape, scale, causal, qc, kc, bt):
        self.shape = shape
        cfg, self.num_parts = _plan(shape.device, shape.rows, shape.h_kv, shape.head_dim)
        cfg = _for_page(cfg, shape.page_size)
        # Rows of one copy: the seesaw kernel copies 32-token tiles whatever the page size. Slices
        # of one copy: the 64-token seesaw copies a tile slice by slice, the others all at once.
        self.box_rows = 32 if cfg.is_seesaw else tma.box_rows_for(shape.page_size) if cfg.path == "sm90" else 0
        self.box_slices = 1 if cfg.is_seesaw64 else shape.head_dim // 64
        # The copies' L2 promotion. 256 B streams random pages from DRAM at ~4.1 TB/s, 128 B at
        # ~4.5 (bench/tma_order.py): the narrow kernel (memory-bound rows) takes 128; the seesaw
        # kernels, whose two m tiles share each page through L2, measured 1-2% slower with it.
        self.l2_promotion = 128 if cfg.path == "sm90" and cfg.block_m < 64 else 256
        # Pages of 32 on the 64-row kernel: one copy a page, tiles stored as two 32-row sub-tiles,
        # a kernel variant of its own (MLA_KV_SUB_ROWS in decode_sm90.cu). The seesaw kernel
        # always reads 32-token tiles with the 5-D map; the 64-token one, on pages of 32, two
        # 32-row boxes a slice with it.
        self.sub_tiles = cfg.is_seesaw or (cfg.file == "decode_sm90.cu" and self.box_rows == 32) or \
            (cfg.is_seesaw64 and self.box_rows == 32)
        self._portable = None
        tasks = shape.h_kv * shape.rows
        combine_defines, *combine_grid = _combine_shape(self.num_parts, shape.batch, tasks,
                                                        kernels.device_info(shape.device)["sms"])
        # Split sequences' partial results in 16 bits (MLA_ACC16, common/params.cuh) where that
        # measured faster: the seesaw kernels (H200: h_q128 4K -1.6%, b32 -6.4%; on the narrow
        # kernel b1 was +4%). Every launcher of the plan and its combine are built alike.
        self.acc16 = _partials_16bit(cfg)
        combine = kernels.get_function(shape.device, "combine.cu",
                                       {"MLA_FP16": int(shape.dtype == FP16), **combine_defines,
                                        **_acc16_defines(self.acc16), **kernels.extra_defines("combine.cu")})
        qs, ks = validate.elem_strides(qc), validate.elem_strides(kc)
        # decode_sm90_seesaw64.cu copies q with the copy engine, through a map made once for this
        # layout (it holds no pointer: tma.q_map), where the layout allows one.
        self.q_map = tma.q_map(qc, shape.h_kv) if cfg.is_seesaw64 else None
        common = dict(batch=shape.batch, s_q=shape.s_q, h_q=shape.h_q, h_kv=shape.h_kv,
                      heads_per_kv=shape.h_q // shape.h_kv, rows=shape.rows,
                      o_stride_b=0, o_stride_s=0, o_stride_h=0)
        self.decode_params = params.Prepacked(
            params.DECODE_PARAMS, 10,
            q_stride_b=qs[0], q_stride_s=qs[1], q_stride_h=qs[2],
            k_stride_page=ks[0], k_stride_row=ks[1], k_stride_head=ks[2],
            bt_stride_b=bt.strides[0] // 4, max_blocks=bt.shape[1], num_pages=shape.num_pages,
            page_shift=shape.page_size.bit_length() - 1, num_parts=self.num_parts, causal=int(causal),
            scale_log2=scale * _LOG2E, k_box_rows=0, k_map_rank=0, k_box_slices=self.box_slices,
            q_map_rank=0 if self.q_map is None else 5, k_map=tma.ZERO_MAP, q_map=self.q_map or tma.ZERO_MAP,
            **common)
        self.combine_params = params.Prepacked(params.COMBINE_PARAMS, 5, **common)
        self.decode = self.portable() if _runs_portable(cfg, shape.page_size) else self._launcher(cfg)
        # Hopper: the combine's CTAs get scheduled while the decode runs and wait on it in the
        # kernel, which hides the combine's launch (programmatic dependent launch, launch.py).
        hopper = kernels.device_info(shape.device)["cc"] >= (9, 0)
        self.combine = launch.Launcher(combine, *combine_grid, 0, self.combine_params, overlap_previous=hopper,
                                       field_names=_COMBINE_FIELDS, device_id=shape.device)
        self.out_shape = (shape.batch, shape.s_q, shape.h_q, HEAD_DIM_V)
        self.lse_shape = (shape.batch, shape.h_q, shape.s_q)
        self.out_strides = (shape.s_q * shape.h_q * HEAD_DIM_V, shape.h_q * HEAD_DIM_V, HEAD_DIM_V)   # a new out
        # One allocation for a new out and lse: out's bytes rounded up to 256, then lse's.
        self._out_bytes = -(-int(np.prod(self.out_shape)) * shape.dtype.itemsize // 256) * 256
        self._lse_bytes = int(np.prod(self.lse_shape)) * 4
        self.last_k_map = (None, None)   # (k_cache pointer, (its tensor map's words, rank))
        self._out_checked = (None, None)   # (signature of the last out= that passed check_out, its strides)
        self._lse_checked = None           # signature of the last lse= that passed check_lse
        self._scratch = {}   # stream pointer -> _new_scratch()
        # The replay cache (launch()): CUDA graphs of the two launches, by what they would launch.
        self._graphs = collections.OrderedDict()   # key -> cupy.cuda.Graph, least recently used first
        self._seen = collections.OrderedDict()     # keys seen once, no graph yet
        self._graph_lock = threading.Lock()
        self._capture_stream = None
        self.replay_ok = True       # False once a capture or a replay failed: direct launches from then on
        self.replay_error = None    # what made it False
        self.replays = 0            # graph replays (tests read these)
        self.captures = 0
        self.evictions = 0   # graphs dropped for room (see _GRAPHS_PER_PLAN)

    def _launcher(self, cfg):
        fp16 = int(self.shape.dtype == FP16)
        defines = {"MLA_FP16": fp16, **_acc16_defines(self.acc16), **cfg.defines()}
        if self.sub_tiles and cfg.file == "decode_sm90.cu":
            defines["MLA_KV_SUB_ROWS"] = 32
        defines.update(kernels.extra_defines(cfg.file))
        fn = kernels.get_function(self.shape.device, cfg.file, defines, cfg.smem_bytes)
        grid = (-(-self.shape.rows // cfg.block_m), self.shape.h_kv, self.num_parts)
        return launch.Launcher(fn, grid, (cfg.threads,), cfg.smem_bytes, self.decode_params,
                               field_names=_DECODE_FIELDS, device_id=self.shape.device)

    def portable(self):
        """The portable kernel's launcher for this layout, for when the Hopper kernel cannot run.
        It keeps num_parts: the schedule was made for the Hopper kernel, and the decode kernels
        accept any part count."""
        if self._portable is None:
            shape = self.shape
            cfg = kernels.decode_config(shape.rows, kernels.device_info(shape.device)["cc"], shape.head_dim, "sm80")
            self._portable = self._launcher(cfg)
        return self._portable

    def new_outputs(self, cp):
        """A new CuPy out and lse in one allocation (one trip to the memory pool instead of two).
        Each view holds the allocation, so it lives while either result does."""
        mem = cp.cuda.alloc(self._out_bytes + self._lse_bytes)
        return (cp.ndarray(self.out_shape, self.shape.dtype, mem),
                cp.ndarray(self.lse_shape, _F32, mem + self._out_bytes))

    def checked_out(self, out_v):
        """Validate a caller's ``out=`` (once per layout; its pointer's alignment every call) and
        return its strides in elements."""
        sig = _signature(out_v)
        last_sig, strides = self._out_checked   # one tuple, swapped whole: thread-safe
        if sig != last_sig or out_v.data.ptr % 16:
            validate.check_out(out_v, self.shape)
            strides = validate.elem_strides(out_v)
            self._out_checked = (sig, strides)
        return strides

    def check_lse(self, lse_v):
        """Validate a caller's ``lse=`` (once per layout: check_lse looks at no pointer)."""
        sig = _signature(lse_v)
        if sig != self._lse_checked:
            validate.check_lse(lse_v, self.shape)
            self._lse_checked = sig

    # ----------------------------------------------------------------------- launching

    def launch(self, stream, decode, ptrs, os_, dec_fields):
        """Launch the decode (``decode``: this plan's launcher or its portable one) and the combine
        on ``stream``: directly, or by replaying a CUDA graph of the very same two launches.

        ``ptrs`` are the decode's ten pointers (the combine's five are among them), ``os_`` the
        output strides and ``dec_fields`` the decode's changed fields (``_DECODE_FIELDS``). Two
        calls with equal (stream, decode launcher, ptrs, os_) launch identical bytes: the other
        fields are per plan, or follow from the k_cache pointer (its tensor map: tma.k_cache_map
        is a function of the pointer and the plan's layout) and the launcher (k_box_rows is 0 on
        the portable one). A key gets a graph on its second sighting (a pointer that changes every
        call never pays for a capture), at most _GRAPHS_PER_PLAN graphs a plan.

        What a graph holds, and why it cannot outlive it: kernel nodes whose parameters are the
        struct's bytes (copied at capture), the kernels' CUfunctions (modules kept loaded for the
        process by kernels.get_function), and device addresses. Those addresses are the plan's
        scratch buffers (owned by this plan, as the graph is) and the caller's arrays, which a
        replay reads or writes at the same addresses a direct launch with these pointers would:
        a replay is exactly that launch, whatever now lives there. Inputs' contents (q,
        cache_seqlens, the schedule) are read when the graph runs, as by a direct launch.

        Bypassed (direct launches): with CUPYMLA_REPLAY=0 (api._REPLAY), when ``stream`` is being
        captured by the caller (torch.cuda.graph, CuPy's begin_capture: their graph must get the
        kernels, not a nested graph), and for good once a capture or a replay raised. The portable
        path is included: a graph of plain launches works on every GPU we support."""
        sp = stream.ptr
        if _REPLAY and self.replay_ok:
            key = (sp, decode, ptrs, os_)
            with self._graph_lock:   # threads may share a plan; a graph exec is not thread-safe
                graph = self._graphs.get(key)
                if graph is None and key not in self._seen:
                    self._seen[key] = None
                    if len(self._seen) > _SEEN_PER_PLAN:
                        self._seen.popitem(last=False)
                elif not _is_capturing(sp):
                    if graph is None:
                        del self._seen[key]
                        graph = self._capture(key, decode, ptrs, os_, dec_fields)
                    else:
                        self._graphs.move_to_end(key)
                    if graph is not None:
                        try:
                            graph.launch(stream)
                        except Exception as exc:  # noqa: BLE001 - never the caller's problem: launch directly
                            self._give_up(exc)
                        else:
                            self.replays += 1
                            return
        decode.run(sp, ptrs, dec_fields)
        self.combine.run(sp, (ptrs[8], ptrs[9], ptrs[5], ptrs[6], ptrs[7]), os_)

    def _capture(self, key, decode, ptrs, os_, dec_fields):
        """Capture the two launches into a graph on a private stream (the caller holds the graph
        lock and made the plan's device current); None, and no more replays, if that fails."""
        cp = arrays.cupy_module()
        try:
            cap = self._capture_stream
            if cap is None:
                cap = self._capture_stream = cp.cuda.Stream(non_blocking=True)
            # Thread-local mode: only this thread's own unsafe calls during the capture would fail
            # it (it makes none: two launches); other threads are not disturbed.
            cap.begin_capture(cp.cuda.runtime.streamCaptureModeThreadLocal)
            try:
                decode.run(cap.ptr, ptrs, dec_fields)
                # Captured with its programmatic-serialization attribute, the combine keeps its
                # programmatic edge from the decode inside the graph (drivers >= 12.3: launch.py).
                self.combine.run(cap.ptr, (ptrs[8], ptrs[9], ptrs[5], ptrs[6], ptrs[7]), os_)
            except BaseException:
                try:
                    cap.end_capture()
                except Exception:  # noqa: BLE001 - the capture is already broken; report the first error
                    pass
                raise
            graph = cap.end_capture()
        except Exception as exc:  # noqa: BLE001 - a failed capture is never the caller's problem
            self._give_up(exc)
            return None
        self.captures += 1
        self._graphs[key] = graph
        if len(self._graphs) > _GRAPHS_PER_PLAN:
            self._graphs.popitem(last=False)
            self.evictions += 1
            if self.evictions > _GRAPHS_PER_PLAN:
                self._give_up(f"more distinct calls than the replay cache holds ({_GRAPHS_PER_PLAN} graphs a "
                              f"plan): they would be captured again and again")
        return graph

    def _give_up(self, why):
        """A capture or a replay failed (or the cache thrashes): this plan launches directly from
        now on (a failure is likely to repeat for every key of the plan, so it is remembered for
        the plan, not only the key). ``why``: the exception, or a sentence."""
        self.replay_ok = False
        self.replay_error = why if isinstance(why, str) else f"{type(why).__name__}: {why}"
        self._graphs.clear()
        self._seen.clear()

    def scratch(self, stream, like):
        """Split-KV buffers ``(o_accum, lse_accum)`` (CuPy views) for work on `stream`, allocated
        by the framework of `like` (torch's allocator is the one that works inside a torch
        CUDA-graph capture). Keyed by stream: work on one stream runs in order, so calls on it
        can share them."""
        return (self._scratch.get(stream.ptr) or self._new_scratch(stream, like))[1]

    def scratch_ptrs(self, stream, like):
        """``(o_accum, lse_accum)`` pointers of scratch() for ``stream`` (the per-call path)."""
        return (self._scratch.get(stream.ptr) or self._new_scratch(stream, like))[2]

    def _new_scratch(self, stream, like):
        """Allocate scratch() for `stream`: kept as (the framework objects that own the memory,
        their views, their pointers)."""
        shape, f32 = self.shape, np.dtype(np.float32)
        with stream:
            o_obj, o_view = arrays.empty_like_framework(
                like, (2 * self.num_parts, shape.h_kv, shape.rows, HEAD_DIM_V), f32, shape.device)
            l_obj, l_view = arrays.empty_like_framework(like, (2 * self.num_parts, shape.h_kv, shape.rows), f32,
                                                        shape.device)
        found = self._scratch[stream.ptr] = ((o_obj, l_obj), (o_view, l_view), (o_view.data.ptr, l_view.data.ptr))
        return found

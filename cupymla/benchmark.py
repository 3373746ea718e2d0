"""Benchmark harness for cupymla's paged MLA decode (DESIGN.md, "Benchmark protocol").

Run it as ``python -m cupymla bench [options]`` or ``python bench/run.py [options]``.

On a machine with an NVIDIA GPU it, for every configuration of the performance-target
table (or the ones chosen with ``--quick`` / ``--configs``):

* builds inputs like FlashMLA's benchmark, on the GPU: q and the KV cache ``randn/10``
  clamped to [-1, 1], varlen lengths ``max(N(s_k, s_k/2), s_q)`` from a fixed seed, the
  block table a random permutation of pages;
* checks our output against the NumPy oracle (``cupymla.reference``) on the first two
  sequences with truncated lengths, and prints the largest errors;
* times with CUDA events (warm-up, then the median of many calls), with the L2 cache
  flushed before every timed call as ``triton.testing.do_bench`` does (the way the FlashMLA
  reference numbers were taken) and the calls queued behind a spin kernel so that the
  events see GPU time only (the kernels alone), and also back to back from Python while
  rotating among several KV caches (like the layers of one decode step: one metadata for
  all of them; this one includes any host-bound gaps):
  (a) the decode call with its metadata computed once beforehand,
  (b) the scheduler (``get_mla_metadata``) alone,
  (c) the host overhead: CPU microseconds per call, calls issued without a sync,
  (d) the same call replayed from a CUDA graph, where capture works;
* reports microseconds, TFLOP/s and GB/s with FlashMLA's formulas and each as a fraction of
  ceilings measured in the same run (device copy and pure read bandwidth, bf16 matmul);
* compares with FlashMLA's numbers measured on an H200 (a table copied below), with a plain
  PyTorch implementation when torch is importable (timed the same way, checked against our
  output) and with the ``flash_mla`` package when it is importable;
* prints a table and writes a JSON file and (when matplotlib is installed) a PNG plot.

Without a GPU it says why, runs the NumPy oracle on one small problem, the scheduler twin on
every configuration, and prints FlashMLA's reference numbers next to the analytic floor of
each configuration at the H200's ceilings. It exits 0 in that case.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

D_QK = 576      # head dim of q and k: 512 latent ("nope") + 64 rope
D_V = 512       # head dim of v (the first 512 columns of the cache)

# Ceilings of one H200 (132 SMs) measured next to FlashMLA, from
# shared/anchors/h200-peers.json (2026-11-29). Used for the analytic floors of CPU mode
# and for FlashMLA's own fractions of the ceiling.
H200_READ_GBS = 4517.0          # pure HBM read, 16-byte loads
H200_COPY_GBS = 4251.0          # device-to-device copy, read + write
H200_BF16_TFLOPS = 793.0        # 8192^3 bf16 matmul

L2_FLUSH_BYTES = 256 << 20      # what triton.testing.do_bench zeroes between calls


@dataclass(frozen=True)
class Config:
    """One benchmark row: batch, query tokens, query heads, KV length, ..."""

    b: int
    s_q: int
    h_q: int
    s_k: int
    varlen: bool = False
    causal: bool = False
    lens: tuple | None = None          # explicit cache_seqlens (overrides s_k / varlen)
    h_kv: int = 1
    target: tuple | None = None        # ("tflops", x) / ("gbs", x): at least x; ("us", x): at most x

    @property
    def key(self):
        return (self.b, self.s_q, self.h_q, self.s_k, self.varlen, self.causal)

    @property
    def name(self) -> str:
        s = f"b{self.b}-sq{self.s_q}-hq{self.h_q}"
        if self.h_kv != 1:
            s += f"-hkv{self.h_kv}"
        if self.lens is not None:
            s += "-lens" + "_".join(str(x) for x in self.lens)
        else:
            s += f"-sk{self.s_k}" + ("-var" if self.varlen else "")
        if self.causal:
            s += "-causal"
        return s

    @property
    def label(self) -> str:
        """Short label for plots."""
        sk = "lens" if self.lens is not None else str(self.s_k) + ("v" if self.varlen else "")
        return f"{self.b}/{self.s_q}/{self.h_q}/{sk}" + ("c" if self.causal else "")

    def target_text(self) -> str:
        if self.target is None:
            return ""
        kind, x = self.target
        return {"tflops": f">={x:g} TF/s", "gbs": f">={x:g} GB/s", "us": f"<={x:g} us"}[kind]


# The performance-target table of DESIGN.md (FlashMLA's configurations on one H200).
CONFIGS = [
    Config(128, 1, 128, 4096, varlen=True, target=("tflops", 600)),
    Config(128, 1, 128, 8192, varlen=True, target=("tflops", 600)),
    Config(128, 1, 128, 16384, varlen=True, target=("tflops", 600)),
    Config(128, 2, 128, 4096, varlen=True, causal=True, target=("tflops", 640)),
    Config(128, 2, 128, 8192, varlen=True, causal=True, target=("tflops", 640)),
    Config(128, 1, 16, 4096, varlen=True, target=("gbs", 4100)),
    Config(128, 1, 16, 8192, varlen=True, target=("gbs", 4100)),
    Config(128, 1, 16, 16384, varlen=True, target=("gbs", 4100)),
    Config(64, 1, 32, 8192, target=("gbs", 4000)),
    Config(8, 1, 128, 32768, target=("us", 125)),
    Config(1, 1, 16, 65536, target=("us", 30)),
    Config(4, 4, 16, 13296, causal=True, lens=(4641, 45118, 1730, 1696), target=("us", 35)),
    Config(32, 1, 128, 1024, varlen=True, target=("us", 25)),
    Config(128, 4, 16, 8192, varlen=True, causal=True, target=("us", 300)),
]

# --quick: one compute-bound, one memory-bound, one latency-bound row.
QUICK = [0, 6, 11]

# FlashMLA (deepseek-ai/FlashMLA HEAD 9241ae3, sm90 dense bf16 decode, page 64) measured on
# one H200 on 2026-11-29 with triton.testing.do_bench; copied from
# shared/anchors/h200-peers.json. These are reference numbers measured elsewhere, not
# results of this run. key: (b, s_q, h_q, s_k, varlen, causal) -> (us, TFLOP/s, GB/s).
FLASHMLA_H200 = {
    (128, 1, 128, 4096, True, False): (253.3, 579.5, 2538),
    (128, 1, 128, 8192, True, False): (514.4, 570.7, 2430),
    (128, 1, 128, 16384, True, False): (1015.1, 578.4, 2427),
    (128, 2, 128, 4096, True, True): (484.2, 606.3, 1401),
    (128, 2, 128, 8192, True, True): (941.2, 623.8, 1366),
    (128, 1, 16, 4096, True, False): (176.5, 103.9, 3464),
    (128, 1, 16, 8192, True, False): (325.8, 112.6, 3741),
    (128, 1, 16, 16384, True, False): (616.6, 119.0, 3946),
    (64, 1, 32, 8192, False, False): (172.9, 211.2, 3519),
    (8, 1, 128, 32768, False, False): (132.1, 552.9, 2304),
    (1, 1, 16, 65536, False, False): (59.7, 38.2, 1265),
    (4, 4, 16, 13296, False, True): (54.9, 134.9, 1126),
    (32, 1, 128, 1024, True, False): (44.4, 200.6, 1030),
    (128, 4, 16, 8192, True, True): (341.4, 429.9, 3608),
}
# Plain PyTorch (gather, einsum, masked softmax) from the same file and run, where measured.
TORCH_H200_US = {
    (128, 1, 16, 4096, True, False): 1684.5,
    (128, 1, 16, 8192, True, False): 3254.0,
    (128, 1, 16, 16384, True, False): 6457.1,
    (64, 1, 32, 8192, False, False): 907.1,
    (8, 1, 128, 32768, False, False): 868.6,
    (1, 1, 16, 65536, False, False): 519.6,
    (4, 4, 16, 13296, False, True): 446.9,
    (32, 1, 128, 1024, True, False): 404.0,
}

PAGE_SIZES = (1, 16, 32, 64, 128, 256)


# --------------------------------------------------------------------------------------
# Work, lengths and small helpers (no GPU needed)
# --------------------------------------------------------------------------------------

def work(cfg: Config, sum_len: int):
    """FlashMLA's (flops, bytes) of one decode call."""
    flops = 2 * cfg.s_q * sum_len * cfg.h_q * (D_QK + D_V)
    nbytes = 2 * (sum_len * cfg.h_kv * D_QK + cfg.b * cfg.s_q * cfg.h_q * (D_QK + D_V))
    return flops, nbytes


def make_seqlens(cfg: Config, seed: int) -> np.ndarray:
    """cache_seqlens as FlashMLA's benchmark draws them (fixed seed)."""
    if cfg.lens is not None:
        return np.asarray(cfg.lens, dtype=np.int32)
    if cfg.varlen:
        rng = np.random.default_rng(seed)
        lens = rng.normal(cfg.s_k, cfg.s_k / 2, cfg.b)
        return np.maximum(lens, cfg.s_q).astype(np.int32)
    return np.full(cfg.b, cfg.s_k, dtype=np.int32)


def select_configs(args) -> list:
    idx = list(range(len(CONFIGS)))
    if args.quick:
        idx = list(QUICK)
    if args.configs:
        tokens = [t.strip() for t in args.configs.split(",") if t.strip()]
        keep = []
        for i in idx:
            name = CONFIGS[i].name
            for t in tokens:
                if (t.isdigit() and int(t) == i) or (not t.isdigit() and t in name):
                    keep.append(i)
                    break
        idx = keep
    cfgs = [CONFIGS[i] for i in idx]
    if args.h_kv != 1:
        cfgs = [Config(**{**asdict(c), "h_kv": args.h_kv, "lens": c.lens}) for c in cfgs
                if c.h_q % args.h_kv == 0]
    return cfgs


def _fmt(x, spec=".1f", none="-"):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return none
    return format(x, spec)


def print_table(headers, rows, file=None):
    file = file or sys.stdout
    cols = [[str(h)] + [str(r[i]) for r in rows] for i, h in enumerate(headers)]
    widths = [max(len(s) for s in col) for col in cols]
    line = "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    print(line, file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for r in rows:
        print("  ".join(str(v).rjust(w) if i else str(v).ljust(w)
                        for i, (v, w) in enumerate(zip(r, widths))), file=file)


def default_out_dir() -> Path:
    if Path("bench/results").is_dir():
        return Path("bench/results")
    return Path("bench-results")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m cupymla bench",
        description="Time cupymla's paged MLA decode against FlashMLA's reference numbers, "
                    "plain PyTorch and the measured ceilings of this GPU.",
    )
    p.add_argument("--quick", action="store_true", help="3 configurations instead of all")
    p.add_argument("--configs", default="",
                   help="comma-separated filters: row indices or substrings of config names "
                        "(e.g. 'hq16,lens' or '0,5'); see --list")
    p.add_argument("--list", action="store_true", help="list the configurations and exit")
    p.add_argument("--page-size", type=int, default=64, choices=PAGE_SIZES)
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp16"))
    p.add_argument("--h-kv", type=int, default=1, help="KV heads (MLA: 1)")
    p.add_argument("--out", default=None,
                   help="folder for the JSON and PNG (default: bench/results if it exists, "
                        "else ./bench-results)")
    p.add_argument("--no-torch", action="store_true", help="skip the plain-PyTorch peer")
    p.add_argument("--no-flash-mla", action="store_true", help="skip the flash_mla package peer")
    p.add_argument("--no-check", action="store_true",
                   help="skip the correctness check against the NumPy reference")
    p.add_argument("--no-graph", action="store_true", help="skip CUDA-graph capture and replay")
    p.add_argument("--no-plot", action="store_true", help="write no PNG")
    p.add_argument("--iters", type=int, default=100, help="max timed calls per measurement")
    p.add_argument("--warmup", type=int, default=5, help="warm-up calls per measurement")
    p.add_argument("--budget", type=float, default=0.5,
                   help="seconds of timed calls per measurement (caps --iters)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--check-len", type=int, default=1024,
                   help="truncate lengths to this for the reference check")
    p.add_argument("--cpu", action="store_true", help="CPU mode even if a GPU is visible")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------
# CPU mode
# --------------------------------------------------------------------------------------

def gpu_status():
    """(cupy module, None) when a GPU is usable, else (None, reason)."""
    try:
        import cupy as cp
    except Exception as e:  # ImportError, or a broken CUDA install
        return None, (f"CuPy is not importable ({type(e).__name__}: {e}); "
                      "install it with pip install -e '.[cuda12]' (or '.[cuda13]')")
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as e:
        return None, f"cupy.cuda.runtime.getDeviceCount() failed: {type(e).__name__}: {e}"
    if n < 1:
        return None, "cupy.cuda.runtime.getDeviceCount() returned 0"
    return cp, None


def print_reference_numbers(cfgs, seed):
    """FlashMLA's H200 numbers next to the analytic floors at the H200's ceilings."""
    print(f"\nFlashMLA on one H200 (reference numbers measured 2026-11-29, "
          f"shared/anchors/h200-peers.json), and what the H200 would need at its ceilings "
          f"({H200_READ_GBS:g} GB/s HBM read, {H200_BF16_TFLOPS:g} TFLOP/s bf16):")
    headers = ["config", "sum(L)", "GFLOP", "MB", "mem floor us", "flop floor us", "floor us",
               "bound", "FlashMLA us", "FM TF/s", "FM GB/s", "FM %ceil", "torch us", "target"]
    rows = []
    for c in cfgs:
        sum_len = int(make_seqlens(c, seed).astype(np.int64).sum())
        flops, nbytes = work(c, sum_len)
        t_mem = nbytes / (H200_READ_GBS * 1e9) * 1e6
        t_flop = flops / (H200_BF16_TFLOPS * 1e12) * 1e6
        fm = FLASHMLA_H200.get(c.key) if c.h_kv == 1 else None
        fm_pct = None
        if fm:
            fm_pct = max(fm[1] / H200_BF16_TFLOPS, fm[2] / H200_READ_GBS) * 100
        rows.append([
            c.name, sum_len, _fmt(flops / 1e9, ".2f"), _fmt(nbytes / 1e6, ".1f"),
            _fmt(t_mem), _fmt(t_flop), _fmt(max(t_mem, t_flop)),
            "memory" if t_mem >= t_flop else "compute",
            _fmt(fm[0] if fm else None), _fmt(fm[1] if fm else None),
            _fmt(fm[2] if fm else None, ".0f"), _fmt(fm_pct, ".0f"),
            _fmt(TORCH_H200_US.get(c.key)), c.target_text(),
        ])
    print_table(headers, rows)
    print("(varlen rows: sum(L) here is from this harness's seed; FlashMLA drew its own "
          "lengths, so its microseconds compare through TFLOP/s and GB/s.)")


def run_cpu_mode(args, reason) -> int:
    print(f"no CUDA GPU visible: {reason}")
    print("No kernels ran. CPU mode: NumPy oracle, scheduler twin, reference numbers and "
          "analytic floors.\n")
    cfgs = select_configs(args)

    # 1. the NumPy oracle on one small problem
    print("== NumPy reference (cupymla.reference.flash_mla_with_kvcache) ==")
    try:
        from cupymla import reference
        import ml_dtypes

        b, s_q, h_q, h_kv, page = 2, 2, 16, 1, args.page_size
        lens = np.array([300, 97], dtype=np.int32)
        rng = np.random.default_rng(args.seed)
        dt = np.dtype(ml_dtypes.bfloat16) if args.dtype == "bf16" else np.dtype(np.float16)
        max_blocks = -(-int(lens.max()) // page)
        num_blocks = b * max_blocks

        def randn(shape):
            return np.clip(rng.standard_normal(shape, dtype=np.float32) / 10, -1, 1).astype(dt)

        q = randn((b, s_q, h_q, D_QK))
        k_cache = randn((num_blocks, page, h_kv, D_QK))
        block_table = rng.permutation(num_blocks).reshape(b, max_blocks).astype(np.int32)
        t0 = time.perf_counter()
        out, lse = reference.flash_mla_with_kvcache(q, k_cache, block_table, lens, D_V,
                                                    softmax_scale=None, causal=True)
        dt_ms = (time.perf_counter() - t0) * 1e3
        print(f"b={b} s_q={s_q} h_q={h_q} h_kv={h_kv} page={page} lens={lens.tolist()} "
              f"causal {args.dtype}: out {tuple(out.shape)} {out.dtype}, "
              f"lse {tuple(lse.shape)} {lse.dtype}, {dt_ms:.1f} ms")
        print(f"  out: mean |x| {float(np.abs(np.asarray(out, np.float64)).mean()):.3e}, "
              f"finite {bool(np.isfinite(np.asarray(out, np.float64)).all())}; "
              f"lse[0, :3, :] = {np.array2string(np.asarray(lse)[0, :3, :], precision=4, separator=', ').replace(chr(10), '')}")
    except Exception as e:
        print(f"  skipped: {type(e).__name__}: {e}")

    # 2. the scheduler twin
    print("\n== Scheduler twin (cupymla.scheduler) for a 132-SM H200 ==")
    try:
        from cupymla import scheduler

        headers = ["config", "parts", "pieces", "split seqs"]
        rows = []
        for c in cfgs:
            lens = make_seqlens(c, args.seed)
            parts = scheduler.num_parts_for(132, c.s_q * c.h_q // c.h_kv, c.h_kv)
            meta, ns = scheduler.schedule(lens, parts)
            per_seq = np.diff(ns)
            rows.append([c.name, parts, int(ns[-1]), int((per_seq > 1).sum())])
        print_table(headers, rows)
    except Exception as e:
        print(f"  skipped: {type(e).__name__}: {e}")

    print_reference_numbers(cfgs, args.seed)
    print("\nRun this on a machine with an NVIDIA GPU (and the cuda12/cuda13 extra) to time "
          "the kernels.")
    return 0


# --------------------------------------------------------------------------------------
# GPU helpers
# --------------------------------------------------------------------------------------

_READ_BW_SRC = r"""
extern "C" __global__ void read_bw(const float4* __restrict__ p, unsigned long long n,
                                   float* __restrict__ sink) {
    float acc = 0.f;
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n; i += 4 * stride) {
        float4 a = __ldcs(p + i);
        float4 b = __ldcs(p + i + stride);
        float4 c = __ldcs(p + i + 2 * stride);
        float4 d = __ldcs(p + i + 3 * stride);
        acc += (a.x + b.y) + (c.z + d.w);
    }
    for (; i < n; i += stride) {
        float4 a = __ldcs(p + i);
        acc += a.x;
    }
    if (acc == 1234.5f) sink[0] = acc;   // never true for our data; keeps the loads alive
}
"""


_SPIN_SRC = r"""
extern "C" __global__ void spin(unsigned long long ns) {
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while (t - t0 < ns);
}
"""


class Gpu:
    """Holds cupy, the device's properties, a stream and the timing helpers."""

    def __init__(self, cp, iters, warmup, budget):
        self.cp = cp
        self.dev = cp.cuda.Device()
        self.props = cp.cuda.runtime.getDeviceProperties(self.dev.id)
        self.name = self.props["name"].decode() if isinstance(self.props["name"], bytes) \
            else str(self.props["name"])
        self.cc = f"{self.props['major']}.{self.props['minor']}"
        self.sms = int(self.props["multiProcessorCount"])
        self.l2 = int(self.props.get("l2CacheSize", 50 << 20))
        self.mem = int(self.props["totalGlobalMem"])
        self.stream = cp.cuda.Stream(non_blocking=True)
        self.iters, self.warmup, self.budget = iters, warmup, budget
        self._spin = None
        with self.stream:
            self.flush_buf = cp.empty(max(L2_FLUSH_BYTES, 4 * self.l2), dtype=cp.uint8)

    # ---- data
    def randn(self, shape, dtype_name, rs):
        """randn/10 clamped to [-1, 1], as bf16 or fp16, generated on the GPU in chunks."""
        cp = self.cp
        n = int(np.prod(shape))
        bits = cp.empty(n, dtype=cp.uint16)
        chunk = 1 << 27
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            x = rs.standard_normal(e - s, dtype=cp.float32)
            x *= 0.1
            cp.clip(x, -1.0, 1.0, out=x)
            if dtype_name == "bf16":
                u = x.view(cp.uint32)
                bits[s:e] = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(cp.uint16)
            else:
                bits[s:e] = x.astype(cp.float16).view(cp.uint16)
            del x
        return bits.view(self.np_dtype(dtype_name)).reshape(shape)

    @staticmethod
    def np_dtype(dtype_name):
        if dtype_name == "bf16":
            import ml_dtypes
            return np.dtype(ml_dtypes.bfloat16)
        return np.dtype(np.float16)

    def to_host_f32(self, a):
        """Any cupy array (bf16 included) -> float32 NumPy array."""
        cp = self.cp
        if a.dtype.itemsize == 2 and a.dtype.kind not in "fiu":   # bfloat16 (ml_dtypes)
            import ml_dtypes
            h = cp.asnumpy(a.view(cp.uint16)).view(ml_dtypes.bfloat16)
            return h.astype(np.float32)
        return cp.asnumpy(a).astype(np.float32)

    def free(self):
        cp = self.cp
        self.stream.synchronize()
        cp.get_default_memory_pool().free_all_blocks()

    # ---- timing
    def _iters_for(self, est_us, per_iter_extra_us=0.0):
        n = int(self.budget * 1e6 / max(est_us + per_iter_extra_us, 1.0))
        return max(5, min(self.iters, n))

    def per_call(self, fn, flush=True, stream=None, n=None):
        """Median microseconds of fn(i), each call between its own pair of events.

        With flush, a 256 MB (or 4x L2) buffer is zeroed before every call, outside the
        events, so the call starts with a cold L2 (like triton.testing.do_bench).
        The timed calls are queued behind a spin kernel that holds the GPU until the host
        has issued them all, so the events time the GPU work alone, not the host's pace
        (a Python call slower than its kernels would otherwise show up as GPU time).
        """
        cp = self.cp
        stream = stream or self.stream
        with stream:
            self._warm_up(fn, stream)
            host_iter_us, est = self._probe(fn, stream, flush)
            if n is None:
                n = self._iters_for(est)
            evs = [(cp.cuda.Event(), cp.cuda.Event()) for _ in range(n)]
            self.spin(stream, min(300_000.0, 1.5 * n * (host_iter_us + 5.0) + 500.0))
            for i in range(n):
                if flush:
                    self.flush_buf.fill(0)
                evs[i][0].record(stream)
                fn(i)
                evs[i][1].record(stream)
            evs[-1][1].synchronize()
        times = [cp.cuda.get_elapsed_time(a, b) * 1e3 for a, b in evs]
        return statistics.median(times), n

    def _warm_up(self, fn, stream):
        for i in range(self.warmup):
            fn(i)
        stream.synchronize()

    def _probe(self, fn, stream, flush):
        """(host µs per iteration without a sync, rough GPU µs per call) over 3 calls of fn."""
        cp = self.cp
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record(stream)
        t0 = time.perf_counter()
        for i in range(3):
            if flush:
                self.flush_buf.fill(0)
            fn(i)
        host_iter_us = (time.perf_counter() - t0) / 3 * 1e6
        b.record(stream)
        b.synchronize()
        return host_iter_us, cp.cuda.get_elapsed_time(a, b) * 1e3 / 3

    def spin(self, stream, us):
        """Hold the stream for about ``us`` microseconds with a one-thread spin kernel."""
        if self._spin is None:
            try:
                self._spin = self.cp.RawKernel(_SPIN_SRC, "spin")
            except Exception as e:
                self._spin = False
                print(f"  (no spin kernel: {type(e).__name__}: {e}; host time may leak "
                      "into per-call timings)")
        if self._spin:
            self._spin((1,), (1,), (np.uint64(int(us * 1000)),), stream=stream)

    def back_to_back(self, fn, n=None, stream=None):
        """Mean microseconds of fn(i) over n calls issued back to back between two events."""
        cp = self.cp
        stream = stream or self.stream
        with stream:
            self._warm_up(fn, stream)
            if n is None:
                n = self._iters_for(self._probe(fn, stream, flush=False)[1])
            a, b = cp.cuda.Event(), cp.cuda.Event()
            a.record(stream)
            for i in range(n):
                fn(i)
            b.record(stream)
            b.synchronize()
        return cp.cuda.get_elapsed_time(a, b) * 1e3 / n

    def host_us(self, fn, n=50, reps=3, stream=None):
        """CPU microseconds per call of fn(i), calls issued without a sync (min over reps)."""
        stream = stream or self.stream
        best = float("inf")
        with stream:
            fn(0)
            stream.synchronize()
            for _ in range(reps):
                t0 = time.perf_counter()
                for i in range(n):
                    fn(i)
                t1 = time.perf_counter()
                stream.synchronize()
                best = min(best, (t1 - t0) / n * 1e6)
        return best

    # ---- ceilings
    def ceilings(self, dtype_name, torch_mod):
        cp = self.cp
        res = {}
        nbytes = 1 << 30
        try:
            with self.stream:
                src = cp.ones(nbytes // 4, dtype=cp.float32)
                dst = cp.empty_like(src)
            rt = cp.cuda.runtime

            def copy(_):
                rt.memcpyAsync(dst.data.ptr, src.data.ptr, nbytes, rt.memcpyDeviceToDevice,
                               self.stream.ptr)

            us, _ = self.per_call(copy, flush=False, n=20)
            res["copy_gbs"] = 2 * nbytes / (us * 1e-6) / 1e9
        except Exception as e:
            res["copy_error"] = f"{type(e).__name__}: {e}"
        try:
            kern = cp.RawKernel(_READ_BW_SRC, "read_bw")
            n16 = (2 << 30) // 16
            with self.stream:
                buf = cp.ones(n16 * 4, dtype=cp.float32)
                sink = cp.zeros(1, dtype=cp.float32)
            grid = (self.sms * 8,)

            def read(_):
                kern(grid, (512,), (buf, np.uint64(n16), sink), stream=self.stream)

            us, _ = self.per_call(read, flush=False, n=20)
            res["read_gbs"] = n16 * 16 / (us * 1e-6) / 1e9
            res["read_method"] = "float4 streaming loads, RawKernel"
            buf = sink = None
        except Exception as e:
            res["read_error"] = f"{type(e).__name__}: {e}"
        src = dst = None
        self.free()
        res.update(self.matmul_ceiling(dtype_name, torch_mod))
        self.free()
        return res

    def matmul_ceiling(self, dtype_name, torch_mod, n=8192):
        cp = self.cp
        flops = 2 * n ** 3
        rs = cp.random.RandomState(1)
        errors = []
        with self.stream:
            a = self.randn((n, n), dtype_name, rs)
            b = self.randn((n, n), dtype_name, rs)
        try:
            with self.stream:
                c = cp.matmul(a, b)

            def mm(_):
                cp.matmul(a, b, out=c)

            us, _ = self.per_call(mm, flush=False, n=10)
            return {"matmul_tflops": flops / (us * 1e-6) / 1e12,
                    "matmul_method": f"cupy.matmul {dtype_name} {n}^3"}
        except Exception as e:
            errors.append(f"cupy {dtype_name}: {type(e).__name__}: {e}")
        if torch_mod is not None:
            try:
                torch = torch_mod
                tdt = torch.bfloat16 if dtype_name == "bf16" else torch.float16
                self.stream.synchronize()
                ta = to_torch(cp, torch, a, dtype_name)
                tb = to_torch(cp, torch, b, dtype_name)
                tc = torch.empty((n, n), dtype=tdt, device=ta.device)
                ts = cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)

                def mm(_):
                    torch.matmul(ta, tb, out=tc)

                us, _ = self.per_call(mm, flush=False, n=10, stream=ts)
                return {"matmul_tflops": flops / (us * 1e-6) / 1e12,
                        "matmul_method": f"torch.matmul {dtype_name} {n}^3",
                        "matmul_notes": errors}
            except Exception as e:
                errors.append(f"torch: {type(e).__name__}: {e}")
        try:
            with self.stream:
                a16 = cp.clip(rs.standard_normal((n, n), dtype=cp.float32) * 0.1, -1, 1)
                a16 = a16.astype(cp.float16)
                c = cp.matmul(a16, a16)

            def mm(_):
                cp.matmul(a16, a16, out=c)

            us, _ = self.per_call(mm, flush=False, n=10)
            return {"matmul_tflops": flops / (us * 1e-6) / 1e12,
                    "matmul_method": f"cupy.matmul fp16 {n}^3 (fallback)",
                    "matmul_notes": errors}
        except Exception as e:
            errors.append(f"cupy fp16: {type(e).__name__}: {e}")
        return {"matmul_error": "; ".join(errors)}


def to_torch(cp, torch, a, dtype_name=None):
    """A cupy array as a torch tensor, zero-copy; bf16 goes through an int16 view."""
    if a.dtype.itemsize == 2 and a.dtype.kind not in "fiu":   # bfloat16 (ml_dtypes)
        return torch.from_dlpack(a.view(cp.int16)).view(torch.bfloat16)
    return torch.from_dlpack(a)


# --------------------------------------------------------------------------------------
# Peers
# --------------------------------------------------------------------------------------

def torch_mla(torch, q, k_cache, block_table, cache_seqlens, causal, scale, dv=D_V):
    """Plain PyTorch paged MLA decode: gather pages, einsum, masked softmax.

    Scores come out of a bf16/fp16 matmul (fp32 accumulation), the softmax runs in fp32,
    probabilities go back to q's dtype for the second matmul, as torch code would do.
    """
    b, s_q, h_q, d = q.shape
    _, page, h_kv, _ = k_cache.shape
    max_blocks = block_table.shape[1]
    g = h_q // h_kv
    k = k_cache[block_table.long()].reshape(b, max_blocks * page, h_kv, d)
    qg = q.reshape(b, s_q, h_kv, g, d)
    s = torch.einsum("bshgd,bkhd->bhgsk", qg, k).float() * scale
    pos = torch.arange(max_blocks * page, device=q.device)
    lim = cache_seqlens.long().view(b, 1).expand(b, s_q)
    if causal:
        lim = lim - s_q + 1 + torch.arange(s_q, device=q.device).view(1, s_q)
    mask = pos.view(1, 1, -1) >= lim.view(b, s_q, 1)
    s.masked_fill_(mask.view(b, 1, 1, s_q, -1), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.softmax(s, dim=-1).to(q.dtype)
    out = torch.einsum("bhgsk,bkhd->bshgd", p, k[..., :dv])
    return out.reshape(b, s_q, h_q, dv), lse.reshape(b, h_q, s_q)


def compare(out, lse, ref_out, ref_lse):
    """Max errors and FlashMLA's tolerances (out: 8e-4 abs + 2.01/128 rel; lse: 8/65536 rel)."""
    out = np.asarray(out, np.float64)
    ref_out = np.asarray(ref_out, np.float64)
    lse = np.asarray(lse, np.float64)
    ref_lse = np.asarray(ref_lse, np.float64)
    d_out = np.abs(out - ref_out)
    out_ok = bool(np.all(d_out <= 8e-4 + 2.01 / 128 * np.abs(ref_out)))
    fin = np.isfinite(ref_lse)
    lse_ok = bool(np.array_equal(np.isfinite(lse), fin))
    d_lse = np.abs(lse[fin] - ref_lse[fin]) if fin.any() else np.zeros(1)
    if fin.any():
        lse_ok = lse_ok and bool(np.all(d_lse <= 8 / 65536 * np.maximum(np.abs(ref_lse[fin]), 1)))
    nan = bool(np.isnan(out).any())
    return {"out_max_abs_err": float(np.nanmax(d_out)) if d_out.size else 0.0,
            "lse_max_abs_err": float(d_lse.max()) if d_lse.size else 0.0,
            "nan": nan, "ok": out_ok and lse_ok and not nan}


# --------------------------------------------------------------------------------------
# One configuration
# --------------------------------------------------------------------------------------

@dataclass
class Row:
    config: str
    b: int
    s_q: int
    h_q: int
    h_kv: int
    s_k: int
    varlen: bool
    causal: bool
    page_size: int
    dtype: str
    sum_len: int
    max_len: int
    flops: int
    bytes: int
    target: str = ""
    lens: list | None = None
    kv_sets: int = 1
    ours: dict = field(default_factory=dict)
    check: dict = field(default_factory=dict)
    flashmla_h200: dict = field(default_factory=dict)
    torch: dict = field(default_factory=dict)
    flash_mla: dict = field(default_factory=dict)
    errors: list = field(default_factory=list)


def _rates(row: Row, us, ceil):
    if us is None or not us > 0:
        return {}
    tflops = row.flops / (us * 1e-6) / 1e12
    gbs = row.bytes / (us * 1e-6) / 1e9
    r = {"us": us, "tflops": tflops, "gbs": gbs}
    bw = ceil.get("read_gbs") or ceil.get("copy_gbs")
    if bw:
        r["pct_bw"] = 100 * gbs / bw
    if ceil.get("matmul_tflops"):
        r["pct_flops"] = 100 * tflops / ceil["matmul_tflops"]
    return r


def target_met(cfg: Config, r: dict):
    if cfg.target is None or not r:
        return None
    kind, x = cfg.target
    if kind == "us":
        return r["us"] <= x
    return r[kind] >= x


def bench_config(gpu: Gpu, api, cfg: Config, args, ceil, torch_mod, flash_mla_mod) -> Row:
    cp = gpu.cp
    lens = make_seqlens(cfg, args.seed)
    sum_len = int(lens.astype(np.int64).sum())
    flops, nbytes = work(cfg, sum_len)
    page = args.page_size
    row = Row(cfg.name, cfg.b, cfg.s_q, cfg.h_q, cfg.h_kv, cfg.s_k, cfg.varlen, cfg.causal,
              page, args.dtype, sum_len, int(lens.max()), flops, nbytes, cfg.target_text(),
              lens=lens.tolist() if cfg.b <= 16 else None)
    fm = FLASHMLA_H200.get(cfg.key) if cfg.h_kv == 1 else None
    if fm:
        row.flashmla_h200 = {"us": fm[0], "tflops": fm[1], "gbs": fm[2],
                             "note": "measured on an H200 2026-11-29, not in this run"}

    max_blocks = max(1, -(-int(lens.max()) // page))
    num_blocks = cfg.b * max_blocks
    cache_bytes = num_blocks * page * cfg.h_kv * D_QK * 2
    used_bytes = sum_len * cfg.h_kv * D_QK * 2
    # Several KV caches (same block table and lengths, like the layers of a decode step)
    # so that back-to-back calls do not find their KV in L2.
    free_mem = cp.cuda.runtime.memGetInfo()[0]
    n_sets = max(1, min(8, math.ceil(3 * gpu.l2 / max(used_bytes, 1))))
    n_sets = max(1, min(n_sets, int(0.3 * free_mem // max(cache_bytes, 1))))
    row.kv_sets = n_sets

    rng = np.random.default_rng(args.seed + 1)
    bt_host = rng.permutation(num_blocks).reshape(cfg.b, max_blocks).astype(np.int32)
    rs = cp.random.RandomState(args.seed + 2)
    with gpu.stream:
        block_table = cp.asarray(bt_host)
        seqlens = cp.asarray(lens)
        qs = [gpu.randn((cfg.b, cfg.s_q, cfg.h_q, D_QK), args.dtype, rs) for _ in range(n_sets)]
        ks = [gpu.randn((num_blocks, page, cfg.h_kv, D_QK), args.dtype, rs)
              for _ in range(n_sets)]
    gpu.stream.synchronize()

    our_out = None
    if api is not None:
        try:
            our_out = _bench_ours(gpu, api, cfg, args, row, ceil, qs, ks, block_table, seqlens,
                                  bt_host, lens)
        except Exception as e:
            row.errors.append(f"cupymla: {type(e).__name__}: {e}")
            print(f"  cupymla failed: {type(e).__name__}: {e}")
    if torch_mod is not None and not args.no_torch:
        try:
            _bench_torch(gpu, torch_mod, cfg, args, row, ceil, qs, ks, block_table, seqlens,
                         our_out)
        except Exception as e:
            row.errors.append(f"torch: {type(e).__name__}: {e}")
            print(f"  torch peer failed: {type(e).__name__}: {e}")
            gpu.free()
            try:
                torch_mod.cuda.empty_cache()
            except Exception:
                pass
    if flash_mla_mod is not None and not args.no_flash_mla:
        try:
            _bench_flash_mla(gpu, torch_mod, flash_mla_mod, cfg, args, row, ceil, qs, ks,
                             block_table, seqlens, our_out)
        except Exception as e:
            row.errors.append(f"flash_mla: {type(e).__name__}: {e}")
            print(f"  flash_mla peer failed: {type(e).__name__}: {e}")
    del qs, ks, block_table, seqlens, our_out
    gpu.free()
    if torch_mod is not None:
        try:
            torch_mod.cuda.empty_cache()
        except Exception:
            pass
    return row


def _bench_ours(gpu, api, cfg, args, row, ceil, qs, ks, block_table, seqlens, bt_host, lens):
    n_sets = len(qs)
    rows_per_kv = cfg.s_q * cfg.h_q // cfg.h_kv

    with gpu.stream:
        t0 = time.perf_counter()
        meta, num_splits = api.get_mla_metadata(seqlens, rows_per_kv, cfg.h_kv)
        out, lse = api.flash_mla_with_kvcache(qs[0], ks[0], block_table, seqlens, D_V, meta,
                                              num_splits, softmax_scale=None,
                                              causal=cfg.causal)
        gpu.stream.synchronize()
        first_ms = (time.perf_counter() - t0) * 1e3

    # correctness on a small subset, against the NumPy oracle (after the first call, so
    # that first_call_ms includes any NVRTC compile or disk-cache load)
    if not args.no_check:
        try:
            row.check = _check_reference(gpu, api, cfg, args, qs[0], ks[0], bt_host, lens)
            c = row.check
            print(f"  check vs reference ({c['subset']}): out max abs err "
                  f"{c['out_max_abs_err']:.2e}, lse max abs err {c['lse_max_abs_err']:.2e}, "
                  f"{'OK' if c['ok'] else 'MISMATCH'} ({c['ref_s']:.1f} s in NumPy)")
        except Exception as e:
            row.check = {"error": f"{type(e).__name__}: {e}"}
            print(f"  check vs reference skipped: {type(e).__name__}: {e}")

    def call(i):
        j = i % n_sets
        return api.flash_mla_with_kvcache(qs[j], ks[j], block_table, seqlens, D_V, meta,
                                          num_splits, softmax_scale=None, causal=cfg.causal)

    us, n = gpu.per_call(call, flush=True)
    ours = _rates(row, us, ceil)
    ours["iters"] = n
    ours["first_call_ms"] = first_ms
    ours["us_back_to_back"] = gpu.back_to_back(call)
    sched_us, _ = gpu.per_call(lambda i: api.get_mla_metadata(seqlens, rows_per_kv, cfg.h_kv),
                               flush=False)
    ours["scheduler_us"] = sched_us
    ours["host_us"] = gpu.host_us(call)
    ours["host_scheduler_us"] = gpu.host_us(
        lambda i: api.get_mla_metadata(seqlens, rows_per_kv, cfg.h_kv))
    if not args.no_graph:
        ours.update(_graph(gpu, api, cfg, qs[0], ks[0], block_table, seqlens, meta,
                           num_splits, out, lse))
    row.ours = ours
    return out, lse


def _graph(gpu, api, cfg, q, k, block_table, seqlens, meta, num_splits, out, lse):
    """Capture one call in a CUDA graph; time its replay and the host cost of a launch."""
    res = {}
    stream = gpu.stream
    kwargs = {}
    try:
        with stream:
            api.flash_mla_with_kvcache(q, k, block_table, seqlens, D_V, meta, num_splits,
                                       causal=cfg.causal, out=out, lse=lse)
        kwargs = {"out": out, "lse": lse}
    except TypeError:
        pass
    try:
        with stream:
            api.flash_mla_with_kvcache(q, k, block_table, seqlens, D_V, meta, num_splits,
                                       causal=cfg.causal, **kwargs)
            stream.synchronize()
            stream.begin_capture()
            try:
                api.flash_mla_with_kvcache(q, k, block_table, seqlens, D_V, meta, num_splits,
                                           causal=cfg.causal, **kwargs)
            finally:
                graph = stream.end_capture()
        graph.launch(stream)
        stream.synchronize()
        us, _ = gpu.per_call(lambda i: graph.launch(stream), flush=True)
        res["graph_us"] = us
        res["host_graph_us"] = gpu.host_us(lambda i: graph.launch(stream))
        res["graph_preallocated_out"] = bool(kwargs)
    except Exception as e:
        res["graph_error"] = f"{type(e).__name__}: {e}"
        try:
            if stream.is_capturing():
                stream.end_capture()
        except Exception:
            pass
    return res


def _check_reference(gpu, api, cfg, args, q, k, bt_host, lens):
    """Our kernel vs the NumPy oracle on the first <= 2 sequences, lengths truncated."""
    from cupymla import reference

    cp = gpu.cp
    nb = min(2, cfg.b)
    lt = np.minimum(lens[:nb], args.check_len).astype(np.int32)
    page = k.shape[1]
    pages = max(1, -(-int(lt.max()) // page))
    bt = bt_host[:nb, :pages]
    # our kernel on the full cache through the (truncated) block table
    with gpu.stream:
        sl = cp.asarray(lt)
        btg = cp.asarray(np.ascontiguousarray(bt))
        qg = q[:nb]                               # leading-axis slice: contiguous
        m, ns = api.get_mla_metadata(sl, cfg.s_q * cfg.h_q // cfg.h_kv, cfg.h_kv)
        out, lse = api.flash_mla_with_kvcache(qg, k, btg, sl, D_V, m, ns, softmax_scale=None,
                                              causal=cfg.causal)
        # gather on a uint16 view: needs no bf16 kernels in CuPy
        k_small = k.view(cp.uint16)[cp.asarray(bt.ravel())]
    out_h = gpu.to_host_f32(out)
    lse_h = cp.asnumpy(lse).astype(np.float32)
    dt = Gpu.np_dtype(args.dtype)
    q_h = cp.asnumpy(qg.view(cp.uint16)).view(dt)
    k_h = cp.asnumpy(k_small).view(dt)
    bt_small = np.arange(nb * pages, dtype=np.int32).reshape(nb, pages)
    t0 = time.perf_counter()
    ref_out, ref_lse = reference.flash_mla_with_kvcache(q_h, k_h, bt_small, lt, D_V,
                                                        softmax_scale=None, causal=cfg.causal)
    ref_s = time.perf_counter() - t0
    res = compare(out_h, lse_h, ref_out, ref_lse)
    res["subset"] = f"{nb} seqs, lens {lt.tolist()}"
    res["ref_s"] = ref_s
    return res


def _bench_torch(gpu, torch, cfg, args, row, ceil, qs, ks, block_table, seqlens, our_out):
    cp = gpu.cp
    gpu.stream.synchronize()
    n_sets = len(qs)
    tq = [to_torch(cp, torch, a) for a in qs]
    tk = [to_torch(cp, torch, a) for a in ks]
    tbt = torch.from_dlpack(block_table)
    tsl = torch.from_dlpack(seqlens)
    scale = D_QK ** -0.5
    ts = cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)
    res = {}
    out, lse = torch_mla(torch, tq[0], tk[0], tbt, tsl, cfg.causal, scale)
    torch.cuda.synchronize()
    if our_out is not None:
        o, l = our_out
        res["vs_ours"] = compare(gpu.to_host_f32(o), cp.asnumpy(l),
                                 out.float().cpu().numpy(), lse.float().cpu().numpy())
        ok = res["vs_ours"]
        print(f"  torch vs cupymla: out max abs diff {ok['out_max_abs_err']:.2e}, "
              f"lse max abs diff {ok['lse_max_abs_err']:.2e}")
    del out, lse

    def call(i):
        j = i % n_sets
        return torch_mla(torch, tq[j], tk[j], tbt, tsl, cfg.causal, scale)

    us, n = gpu.per_call(call, flush=True, stream=ts)
    res.update(_rates(row, us, ceil))
    res["iters"] = n
    res["host_us"] = gpu.host_us(call, n=10, reps=2, stream=ts)
    row.torch = res


def _bench_flash_mla(gpu, torch, flash_mla, cfg, args, row, ceil, qs, ks, block_table,
                     seqlens, our_out):
    if torch is None:
        raise RuntimeError("flash_mla needs torch")
    if args.page_size != 64:
        row.flash_mla = {"skipped": "FlashMLA supports page size 64 only"}
        return
    cp = gpu.cp
    gpu.stream.synchronize()
    tq = [to_torch(cp, torch, a) for a in qs]
    tk = [to_torch(cp, torch, a) for a in ks]
    tbt = torch.from_dlpack(block_table)
    tsl = torch.from_dlpack(seqlens)
    n_sets = len(qs)
    try:
        meta, ns = flash_mla.get_mla_metadata(tsl, cfg.s_q * cfg.h_q // cfg.h_kv, cfg.h_kv)
    except TypeError:
        meta, ns = flash_mla.get_mla_metadata()

    def call(i):
        j = i % n_sets
        return flash_mla.flash_mla_with_kvcache(tq[j], tk[j], tbt, tsl, D_V, meta, ns,
                                                causal=cfg.causal)

    out, lse = call(0)
    torch.cuda.synchronize()
    res = {}
    if our_out is not None:
        o, l = our_out
        res["vs_ours"] = compare(gpu.to_host_f32(o), cp.asnumpy(l),
                                 out.float().cpu().numpy(), lse.float().cpu().numpy())
    ts = cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)
    us, n = gpu.per_call(call, flush=True, stream=ts)
    res.update(_rates(row, us, ceil))
    res["iters"] = n
    row.flash_mla = res


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------

def print_results(rows, cfgs, ceil):
    headers = ["config", "us", "TF/s", "GB/s", "%bw", "%flop", "graph us", "sched us",
               "host us", "FlashMLA us", "vs FM", "torch us", "target", "met", "check"]
    table = []
    for r, c in zip(rows, cfgs):
        o = r.ours
        fm = r.flashmla_h200
        speed = None
        if o.get("tflops") and fm.get("tflops"):
            speed = o["tflops"] / fm["tflops"]   # work-normalised: sum(L) differs for varlen
        met = target_met(c, o)
        chk = r.check
        table.append([
            r.config, _fmt(o.get("us")), _fmt(o.get("tflops")), _fmt(o.get("gbs"), ".0f"),
            _fmt(o.get("pct_bw"), ".0f"), _fmt(o.get("pct_flops"), ".0f"),
            _fmt(o.get("graph_us")), _fmt(o.get("scheduler_us")), _fmt(o.get("host_us")),
            _fmt(fm.get("us")), _fmt(speed, ".2f") + ("x" if speed else ""),
            _fmt(r.torch.get("us")), r.target, "-" if met is None else ("yes" if met else "NO"),
            ("ok" if chk.get("ok") else ("FAIL" if "ok" in chk else "-")),
        ])
    print()
    print_table(headers, table)
    bw = ceil.get("read_gbs") or ceil.get("copy_gbs")
    print(f"%bw: of {_fmt(bw, '.0f')} GB/s measured read bandwidth; %flop: of "
          f"{_fmt(ceil.get('matmul_tflops'), '.0f')} TFLOP/s measured matmul. "
          "vs FM: our TFLOP/s over FlashMLA's H200 TFLOP/s (work-normalised). "
          "us: median GPU time of the call (its kernels), L2 flushed before each call; "
          "graph us: the same call replayed from a CUDA graph; sched us: get_mla_metadata's "
          "GPU time; host us: CPU time per call from Python.")


def write_json(path: Path, gpu: Gpu, args, argv, ceil, rows, versions):
    doc = {
        "what": "cupymla paged MLA decode benchmark",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(getattr(sys, "orig_argv", None)
                            or [sys.executable, "-m", "cupymla", "bench"] + list(argv)),
        "machine": {
            "gpu": gpu.name, "compute_capability": gpu.cc, "sms": gpu.sms,
            "l2_bytes": gpu.l2, "memory_bytes": gpu.mem, "host": platform.node(),
            "python": platform.python_version(),
        },
        "versions": versions,
        "env": {k: v for k, v in os.environ.items() if k.startswith("CUPYMLA_")},
        "options": {"page_size": args.page_size, "dtype": args.dtype, "h_kv": args.h_kv,
                    "seed": args.seed, "iters": args.iters, "warmup": args.warmup},
        "method": ("us: CUDA events, median of per-call timings after warm-up, L2 flushed "
                   "(256 MB zeroed) before each timed call, calls queued behind a spin kernel "
                   "so the events time the GPU work only; metadata computed once beforehand; "
                   "us_back_to_back: mean of calls issued back to back from Python rotating "
                   "among kv_sets KV caches (includes host-bound gaps); host_us: CPU time per "
                   "call measured with perf_counter, no sync; graph_us: one call captured in "
                   "a CUDA graph, replayed, timed like us"),
        "formulas": {"flops": "2 * s_q * sum(L) * h_q * (576 + 512)",
                     "bytes": "2 * (sum(L) * h_kv * 576 + b * s_q * h_q * (576 + 512))"},
        "ceilings": ceil,
        "flashmla_source": "shared/anchors/h200-peers.json (H200, 2026-11-29)",
        "rows": [asdict(r) for r in rows],
    }
    path.write_text(json.dumps(doc, indent=1, default=str))


def write_plot(path: Path, rows, cfgs, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:
        print(f"no plot: matplotlib is not importable ({type(e).__name__}: {e}); "
              "pip install matplotlib (or the 'bench' extra)")
        return False
    labels = [c.label for c in cfgs]
    series = [
        ("cupymla", [r.ours.get("us") for r in rows], "tab:green"),
        ("FlashMLA (H200 ref.)", [r.flashmla_h200.get("us") for r in rows], "tab:blue"),
        ("flash_mla (this run)", [r.flash_mla.get("us") for r in rows], "tab:cyan"),
        ("PyTorch", [r.torch.get("us") for r in rows], "tab:gray"),
    ]
    series = [s for s in series if any(v for v in s[1])]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8, 0.9 * len(rows) + 3), 8),
                                   sharex=True)
    x = np.arange(len(rows))
    w = 0.8 / max(1, len(series))
    for k, (name, vals, color) in enumerate(series):
        ax1.bar(x + (k - (len(series) - 1) / 2) * w, [v or 0 for v in vals], w, label=name,
                color=color)
    ax1.set_yscale("log")
    ax1.set_ylabel("microseconds per call (lower is better)")
    ax1.legend(fontsize=8)
    ax1.set_title(title, fontsize=10)
    # speedup vs FlashMLA, work-normalised
    sp = []
    for r in rows:
        a, b = r.ours.get("tflops"), r.flashmla_h200.get("tflops")
        sp.append(a / b if a and b else 0)
    sp_t = []
    for r in rows:
        a, b = r.torch.get("tflops"), r.flashmla_h200.get("tflops")
        sp_t.append(a / b if a and b else 0)
    ax2.bar(x - 0.2, sp, 0.4, label="cupymla / FlashMLA", color="tab:green")
    if any(sp_t):
        ax2.bar(x + 0.2, sp_t, 0.4, label="PyTorch / FlashMLA", color="tab:gray")
    ax2.axhline(1.0, color="tab:blue", lw=1)
    ax2.set_ylabel("throughput vs FlashMLA (H200)")
    ax2.set_xticks(x)
    ax2.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax2.set_xlabel("b / s_q / h_q / s_k (v = varlen, c = causal)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _versions(cp):
    v = {"numpy": np.__version__}
    try:
        from importlib.metadata import version
        v["cupymla"] = version("cupymla")
    except Exception:
        v["cupymla"] = "not installed (checkout)"
    if cp is not None:
        v["cupy"] = cp.__version__
        try:
            v["nvrtc"] = ".".join(map(str, cp.cuda.nvrtc.getVersion()))
        except Exception:
            pass
        try:
            v["cuda_runtime"] = cp.cuda.runtime.runtimeGetVersion()
            v["cuda_driver"] = cp.cuda.runtime.driverGetVersion()
        except Exception:
            pass
    return v


def _load_api():
    """(api module-like, None) or (None, reason)."""
    try:
        import cupymla
        if hasattr(cupymla, "flash_mla_with_kvcache") and hasattr(cupymla, "get_mla_metadata"):
            return cupymla, None
        from cupymla import api
        return api, None
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------

def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    cfgs = select_configs(args)
    if args.list:
        for i, c in enumerate(CONFIGS):
            print(f"{i:2d}  {c.name:48s} {c.target_text()}{'  (quick)' if i in QUICK else ''}")
        return 0
    if not cfgs:
        print(f"no configuration matches --configs {args.configs!r}; see --list")
        return 2

    cp, reason = (None, "--cpu given") if args.cpu else gpu_status()
    if cp is None:
        return run_cpu_mode(args, reason)

    api, api_reason = _load_api()
    versions = _versions(cp)
    torch_mod = None
    if not args.no_torch:
        try:
            import torch
            if torch.cuda.is_available():
                torch_mod = torch
                versions["torch"] = torch.__version__
        except Exception:
            pass
    flash_mla_mod = None
    if not args.no_flash_mla:
        try:
            import flash_mla
            flash_mla_mod = flash_mla
        except Exception:
            pass

    gpu = Gpu(cp, args.iters, args.warmup, args.budget)
    print(f"GPU: {gpu.name} (sm_{gpu.cc.replace('.', '')}, {gpu.sms} SMs, "
          f"{gpu.l2 >> 20} MB L2, {gpu.mem / 2**30:.0f} GiB)")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    if api is None:
        print(f"cupymla API not importable ({api_reason}): timing ceilings and peers only")
    print(f"page size {args.page_size}, {args.dtype}, h_kv {args.h_kv}; "
          f"peers: torch {'yes' if torch_mod else 'no'}, "
          f"flash_mla {'yes' if flash_mla_mod else 'no'}")

    print("\n== Ceilings ==")
    ceil = gpu.ceilings(args.dtype, torch_mod)
    for k, v in ceil.items():
        print(f"  {k}: {_fmt(v, '.1f') if isinstance(v, float) else v}")

    rows = []
    done = []
    for i, c in enumerate(cfgs):
        print(f"\n== [{i + 1}/{len(cfgs)}] {c.name} ==")
        try:
            r = bench_config(gpu, api, c, args, ceil, torch_mod, flash_mla_mod)
        except Exception as e:  # out of memory, ...
            print(f"  skipped: {type(e).__name__}: {e}")
            gpu.free()
            continue
        o = r.ours
        if o:
            print(f"  cupymla: {_fmt(o.get('us'))} us, {_fmt(o.get('tflops'))} TFLOP/s, "
                  f"{_fmt(o.get('gbs'), '.0f')} GB/s; back to back {_fmt(o.get('us_back_to_back'))}"
                  f" us ({r.kv_sets} KV sets); scheduler {_fmt(o.get('scheduler_us'))} us; "
                  f"host {_fmt(o.get('host_us'))} us/call; first call "
                  f"{_fmt(o.get('first_call_ms'))} ms"
                  + (f"; graph {_fmt(o.get('graph_us'))} us, host {_fmt(o.get('host_graph_us'))}"
                     f" us/launch" if "graph_us" in o else
                     (f"; graph: {o['graph_error']}" if "graph_error" in o else "")))
        if r.torch.get("us"):
            print(f"  torch: {_fmt(r.torch['us'])} us, {_fmt(r.torch['gbs'], '.0f')} GB/s")
        if r.flash_mla.get("us"):
            print(f"  flash_mla: {_fmt(r.flash_mla['us'])} us")
        rows.append(r)
        done.append(c)

    print_results(rows, done, ceil)
    if api is None:
        print(f"\n(no cupymla numbers: API not importable: {api_reason})")

    out_dir = Path(args.out) if args.out else default_out_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = "".join(ch if ch.isalnum() else "-" for ch in gpu.name).strip("-").lower()
    base = out_dir / f"bench-{slug}-{args.dtype}-p{args.page_size}-{stamp}"
    write_json(base.with_suffix(".json"), gpu, args, argv, ceil, rows, versions)
    print(f"\nwrote {base.with_suffix('.json')}")
    if not args.no_plot and rows:
        title = (f"cupymla paged MLA decode on {gpu.name}, {args.dtype}, page {args.page_size}"
                 f" (FlashMLA: H200 reference numbers)")
        if write_plot(base.with_suffix(".png"), rows, done, title):
            print(f"wrote {base.with_suffix('.png')}")
    failed = [r.config for r in rows if r.check and r.check.get("ok") is False]
    if failed:
        print(f"\nCORRECTNESS CHECK FAILED for: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

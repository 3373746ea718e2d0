"""Does the order in which one TMA box walks a 64-token page change the DRAM rate? (GPU machine)

    python3 bench/tma_order.py

The memory-bound rows (h_q16, h_q32, b1) stream the cache at ~4.0-4.1 TB/s marginal against a
4.5 TB/s read ceiling. A page (64 tokens x 576 values, 72 KB contiguous) is copied by one 5-D
box whose smem layout the wgmma needs, slice by slice: 9 passes over the page, 64 strided
128-byte rows each. Here every SM's one thread streams pages of a 1.2 GB cache in random order
(nothing reads the data; each CTA its own pages), with 1-3 pages in flight, three box orders:
  slices   the decode kernels' order: (64 columns, 64 rows, 9 slices) - 9 strided passes
  atoms    (64 columns, 8 rows, 9 slices, 8 row groups) - a valid wgmma layout (core matrices
           9 KB apart), 9 passes over each 9 KB stretch
  linear   (64 columns, 9 slices, 64 rows) - the page front to back (a layout no product can use)
Also, for the same pages: the slices order on pages in address order (is it the random order?),
the slices order with other L2 promotions, cp.async by one CTA an SM of 128-512 threads, and
plain 16-byte loads by 4 CTAs of 512 threads an SM (a page a CTA at a time, all 9 loads a
thread in flight; is it the copy engine?). Prints TB/s from DRAM over all SMs, two rounds.
"""

import sys

import cupy as cp
import ml_dtypes
import numpy as np

from bench.tma_boxes import HELPERS
from cupymla import tma

SRC = HELPERS + r"""
extern "C" __global__ void stream_pages(const unsigned long long* map, const int* pages, int num_pages,
                                        int per_cta, int slots, int evict_first) {
    extern __shared__ __align__(1024) unsigned char smem[];
    __shared__ __align__(8) unsigned long long bar[3];
    if (threadIdx.x != 0) return;
    asm volatile("fence.proxy.tensormap::generic.acquire.gpu [%0], 128;" :: "l"(map) : "memory");
    const unsigned bar0 = sa(bar), dst0 = (sa(smem) + 1023) & ~1023u;
    for (int i = 0; i < 3; ++i) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" :: "r"(bar0 + 8 * i));
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    for (int t = 0; t < per_cta + slots; ++t) {
        const int slot = t % slots;
        if (t >= slots) wait(bar0 + 8 * slot, ((t / slots) - 1) & 1);
        if (t >= per_cta) continue;
        const int page = pages[(blockIdx.x * per_cta + t) % num_pages];
        asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(bar0 + 8 * slot), "r"(73728) : "memory");
        if (evict_first) {   // the decode kernels' L2 hint on KV copies (common/sm90.cuh)
            unsigned long long policy;
            asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
            asm volatile("cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint"
                         " [%0], [%1, {%2, %3, %4, %5, %6}], [%7], %8;"
                         :: "r"(dst0 + slot * 73728), "l"(map), "r"(0), "r"(0), "r"(0), "r"(0), "r"(page),
                            "r"(bar0 + 8 * slot), "l"(policy) : "memory");
        } else {
            asm volatile("cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
                         " [%0], [%1, {%2, %3, %4, %5, %6}], [%7];"
                         :: "r"(dst0 + slot * 73728), "l"(map), "r"(0), "r"(0), "r"(0), "r"(0), "r"(page),
                            "r"(bar0 + 8 * slot) : "memory");
        }
    }
}

// The same pages by cp.async (the load/store path) into shared memory, XOR-swizzled like the
// decode kernels' tiles: blockDim.x threads, `slots` pages in flight.
extern "C" __global__ void cpasync_pages(const uint4* k, const int* pages, int num_pages, int per_cta, int slots) {
    extern __shared__ __align__(1024) unsigned char smem[];
    const unsigned dst0 = (sa(smem) + 1023) & ~1023u;
    for (int t = 0; t < per_cta + slots - 1; ++t) {
        if (t < per_cta) {
            const uint4* src = k + (long long)pages[(blockIdx.x * per_cta + t) % num_pages] * 4608;
            const unsigned dst = dst0 + (t % slots) * 73728;
            for (int i = threadIdx.x; i < 4608; i += blockDim.x)
                asm volatile("cp.async.cg.shared.global [%0], [%1], 16;"
                             :: "r"(dst + 16 * (i ^ ((i >> 3) & 7))), "l"(src + i) : "memory");
        }
        asm volatile("cp.async.commit_group;" ::: "memory");
        if (slots == 1) asm volatile("cp.async.wait_group 0;" ::: "memory");
        else if (slots == 2) asm volatile("cp.async.wait_group 1;" ::: "memory");
        else asm volatile("cp.async.wait_group 2;" ::: "memory");
        __syncthreads();
    }
}

extern "C" __global__ void __launch_bounds__(512) load_pages(const uint4* k, const int* pages, int num_pages,
                                                             int per_cta, unsigned* sink) {
    uint4 acc = make_uint4(0, 0, 0, 0);
    for (int t = 0; t < per_cta; ++t) {
        const uint4* src = k + (long long)pages[(blockIdx.x * per_cta + t) % num_pages] * 4608;
        uint4 v[9];
#pragma unroll
        for (int i = 0; i < 9; ++i) v[i] = src[threadIdx.x + 512 * i];
#pragma unroll
        for (int i = 0; i < 9; ++i) acc.x ^= v[i].x, acc.y ^= v[i].y, acc.z ^= v[i].z, acc.w ^= v[i].w;
    }
    if ((acc.x ^ acc.y ^ acc.z ^ acc.w) == 0x12345678u) sink[0] = 1;   // keeps the loads
}
"""


def main():
    dev = cp.cuda.Device()
    sms = dev.attributes["MultiProcessorCount"]
    num_pages = 16384                                   # 1.2 GB of cache: read from DRAM
    k = cp.full((num_pages, 64, 1, 576), 0x3F80, dtype=cp.uint16).view(np.dtype(ml_dtypes.bfloat16))
    sp, sr = int(k.strides[0]), int(k.strides[1])
    orders = {   # dims (elements), strides of dims 1.. (bytes), box
        "slices": ([64, 64, 9, 1, num_pages], [sr, 128, sr * 64, sp], [64, 64, 9, 1, 1]),
        "atoms": ([64, 8, 9, 8, num_pages], [sr, 128, 8 * sr, sp], [64, 8, 9, 8, 1]),
        "linear": ([64, 9, 64, 1, num_pages], [128, sr, sr * 64, sp], [64, 9, 64, 1, 1]),
    }
    maps = {}
    for name, (dims, strides, box) in orders.items():
        words = tma._encode_tiled(k, dims, strides, box)
        if words is None:
            print(f"no tensor map for {name} (cuda-bindings missing or the driver refused)")
            continue
        maps[name] = cp.asarray(np.array(words, dtype=np.uint64))
    pages = cp.asarray(np.random.default_rng(0).permutation(num_pages).astype(np.int32))
    in_order = cp.arange(num_pages, dtype=cp.int32)
    kern = cp.RawKernel(SRC, "stream_pages", options=("-std=c++17",))
    loads = cp.RawKernel(SRC, "load_pages", options=("-std=c++17",))
    cpasync = cp.RawKernel(SRC, "cpasync_pages", options=("-std=c++17",))
    for promo in (0, 64, 128):   # the slices order with other L2 promotions (the library uses 256)
        dims, strides, box = orders["slices"]
        words = tma._encode_tiled(k, dims, strides, box, promotion=promo)
        if words is not None:
            maps[f"slices, L2 promotion {promo}"] = cp.asarray(np.array(words, dtype=np.uint64))
    sink = cp.zeros(1, cp.uint32)
    smem = 3 * 73728 + 1024
    kern.max_dynamic_shared_size_bytes = smem
    cpasync.max_dynamic_shared_size_bytes = smem
    per_cta = 96                                        # 132 x 96 x 72 KB = 0.93 GB a launch
    print(f"{'order':>40s} {'in flight':>3s} {'TB/s':>6s}")
    def rate(launch, n_pages):
        launch()
        a, b = cp.cuda.Event(), cp.cuda.Event()
        a.record()
        for _ in range(5):
            launch()
        b.record()
        b.synchronize()
        return n_pages * 73728 / (cp.cuda.get_elapsed_time(a, b) / 1e3 / 5) / 1e12

    for rnd in range(2):
        for slots in (1, 2, 3):
            for name, m in maps.items():
                for ef in (0, 1):
                    args = (m, pages, np.int32(num_pages), np.int32(per_cta), np.int32(slots), np.int32(ef))
                    r = rate(lambda: kern((sms,), (32,), args, shared_mem=smem), sms * per_cta)
                    print(f"{name + (', evict_first' if ef else ''):>40s} {slots:3d} {r:6.2f}", flush=True)
        if "slices" in maps:
            args = (maps["slices"], in_order, np.int32(num_pages), np.int32(per_cta), np.int32(2), np.int32(0))
            r = rate(lambda: kern((sms,), (32,), args, shared_mem=smem), sms * per_cta)
            print(f"{'slices, pages in order':>22s} 2 {r:6.2f}", flush=True)
        for threads in (128, 256, 512):
            for slots in (2, 3):
                args = (k, pages, np.int32(num_pages), np.int32(per_cta), np.int32(slots))
                r = rate(lambda: cpasync((sms,), (threads,), args, shared_mem=smem), sms * per_cta)
                print(f"cp.async, {threads} threads, {slots} pages in flight {r:6.2f}", flush=True)
        ctas = 4 * sms
        args = (k, pages, np.int32(num_pages), np.int32(per_cta // 4), sink)
        r = rate(lambda: loads((ctas,), (512,), args), ctas * (per_cta // 4))
        print(f"{'16-byte loads, 4 CTAs an SM':>27s} {r:6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
